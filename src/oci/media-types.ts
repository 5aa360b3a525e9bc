/** image-spec media types, and the Docker schema2 ones docker-archive and registries still carry. */
export const MediaTypes = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNondistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciLayerNondistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
} as const;

export type Compression = 'none' | 'gzip' | 'zstd';

const LAYER_COMPRESSION: Record<string, Compression> = {
  [MediaTypes.OciLayer]: 'none',
  [MediaTypes.OciLayerGzip]: 'gzip',
  [MediaTypes.OciLayerZstd]: 'zstd',
  [MediaTypes.OciLayerNondistributable]: 'none',
  [MediaTypes.OciLayerNondistributableGzip]: 'gzip',
  [MediaTypes.OciLayerNondistributableZstd]: 'zstd',
  [MediaTypes.DockerLayerGzip]: 'gzip',
  [MediaTypes.DockerLayer]: 'none',
};

export function layerCompression(mediaType: string): Compression | undefined {
  return LAYER_COMPRESSION[mediaType];
}

export function isIndexType(mt: string): boolean {
  return mt === MediaTypes.OciIndex || mt === MediaTypes.DockerManifestList;
}

export function isManifestType(mt: string): boolean {
  return mt === MediaTypes.OciManifest || mt === MediaTypes.DockerManifest;
}

export function isConfigType(mt: string): boolean {
  return mt === MediaTypes.OciConfig || mt === MediaTypes.DockerConfig;
}
