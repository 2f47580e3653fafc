/** The small, deterministic content the request-rate and listing scenarios use. */
import { randomBlob, smallBlob, type SmallBlob } from './data.ts';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const APP_REPO = 'bench/app';
export const TAGS_REPO = 'bench/tags';
export const CATALOG_PREFIX = 'bench-catalog/r';

export interface Fixtures {
  config: SmallBlob;
  /** Four 4 KiB layers; the first is the blob of the 4 KiB GET scenario. */
  layers: SmallBlob[];
  /** An image manifest of the config and the layers (a typical, manifest-sized document). */
  manifest: SmallBlob;
  /** A manifest with the config only, pushed into every catalog repository and under every tag. */
  small: SmallBlob;
}

export function fixtures(): Fixtures {
  const config = smallBlob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: [] },
        history: [{ created: '2024-01-01T00:00:00Z', created_by: 'berth bench' }],
      }),
    ),
  );
  const layers = [1, 2, 3, 4].map((i) => randomBlob(4096, i));
  const desc = (mediaType: string, b: SmallBlob): Record<string, unknown> => ({ mediaType, digest: b.digest, size: b.size });
  const manifest = smallBlob(
    Buffer.from(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: desc('application/vnd.oci.image.config.v1+json', config),
          layers: layers.map((l) => desc('application/vnd.oci.image.layer.v1.tar+gzip', l)),
          annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z', 'org.opencontainers.image.source': 'https://example.com/berth-bench' },
        },
        null,
        3,
      ),
    ),
  );
  const small = smallBlob(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc('application/vnd.oci.image.config.v1+json', config), layers: [] })),
  );
  return { config, layers, manifest, small };
}

export function catalogRepo(i: number): string {
  return `${CATALOG_PREFIX}${String(i).padStart(5, '0')}`;
}

export function tagName(i: number): string {
  return `t${String(i).padStart(5, '0')}`;
}
