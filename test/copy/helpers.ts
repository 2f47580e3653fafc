/** Fixtures for the copy tests: one source layout with a multi-arch index, a single image and a referrer. */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as H from '../helpers/images.ts';
import type { BlobDesc, BlobRead, ImageSource } from '../../src/copy/transport.ts';

export interface Fixture {
  dir: string;
  root: string;
  index: H.BuiltIndex;
  single: H.BuiltImage;
  artifact: H.BuiltArtifact;
  cleanup(): void;
}

/**
 * `<root>/src`: tag `multi` = an OCI index over linux/amd64 and linux/arm64/v8, tag `single` = one image with a
 * large first layer (`bigLayer` bytes, incompressible), and an untagged artifact whose subject is `single`.
 */
export function buildFixture(bigLayer = 64 * 1024): Fixture {
  const root = mkdtempSync(join(tmpdir(), 'berth-copy-'));
  const dir = join(root, 'src');
  const layout = new H.OciLayout(dir);
  const index = H.addIndex(layout, { layers: 2 });
  const single = H.addImage(layout, { layers: [[{ path: 'big/blob.bin', size: bigLayer }], [{ path: 'small/file', size: 1000 }]], seed: 'single' });
  const artifact = H.addArtifact(layout, { subject: single.desc, artifactType: 'application/vnd.example.sbom.v1+json' });
  layout.tag('multi', index.desc);
  layout.tag('single', { mediaType: single.desc.mediaType, digest: single.digest, size: single.desc.size });
  layout.refs.push({ mediaType: artifact.desc.mediaType, digest: artifact.digest, size: artifact.desc.size });
  layout.write();
  return { dir, root, index, single, artifact, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** Every file under `blobs/` hashes to its name (nothing corrupt is visible); returns the digests. */
export function verifyBlobs(dir: string): string[] {
  const out: string[] = [];
  for (const alg of readdirSync(join(dir, 'blobs'))) {
    for (const hex of readdirSync(join(dir, 'blobs', alg))) {
      const got = createHash(alg).update(readFileSync(join(dir, 'blobs', alg, hex))).digest('hex');
      if (got !== hex) throw new Error(`corrupt blob ${alg}:${hex} (hashes to ${got})`);
      out.push(`${alg}:${hex}`);
    }
  }
  return out.sort();
}

export function indexJson(dir: string): { manifests: H.Descriptor[] } {
  return JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: H.Descriptor[] };
}

/**
 * Wraps a source so that the blob `digest` fails after `failAfter` bytes the first `failures` times it is
 * opened, and records every (digest, offset) opened.
 */
export function flakySource(inner: ImageSource, digest: string, failAfter: number, failures = 1): ImageSource & { opens: Array<{ digest: string; offset: number }> } {
  const opens: Array<{ digest: string; offset: number }> = [];
  let left = failures;
  return {
    name: inner.name,
    opens,
    getManifest: (ref, signal) => inner.getManifest(ref, signal),
    listTags: (signal) => inner.listTags(signal),
    referrers: inner.referrers ? (d, signal) => inner.referrers!(d, signal) : undefined,
    async openBlob(desc: BlobDesc, offset = 0, signal?: AbortSignal): Promise<BlobRead> {
      opens.push({ digest: desc.digest, offset });
      const r = await inner.openBlob(desc, offset, signal);
      if (desc.digest !== digest || left <= 0) return r;
      left--;
      const src = r.stream;
      async function* broken(): AsyncGenerator<Buffer> {
        let n = 0;
        for await (const c of src) {
          const chunk = c as Buffer;
          if (n + chunk.length > failAfter) {
            yield chunk.subarray(0, failAfter - n);
            src.destroy();
            throw new Error('source connection reset (test)');
          }
          n += chunk.length;
          yield chunk;
        }
      }
      return { stream: Readable.from(broken()), size: r.size };
    },
  };
}
