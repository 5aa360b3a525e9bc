/**
 * What each docker verb berth does not have answers (src/cli/docker-verbs.ts registers them): a module of
 * its own so the command table (src/cli/families.ts) names the verbs without loading the family.
 */
export const DOCKER_VERBS: Record<string, string> = {
  build:
    'berth does not build images; build with docker/buildah and `berth image import` (or `berth fleet push`)',
  buildx: 'berth does not build images; build with docker/buildah and `berth image import`',
  push: 'berth does not push to registries; publish an image to devices with `berth fleet push <layout|archive> --tag name:tag`',
  login:
    'berth has no registry login: devices get images from the fleet server over MQTT (`berth pull`, `berth fleet push`)',
  logout: 'berth has no registry login: devices get images from the fleet server over MQTT',
  search: 'berth does not search registries; images come from the fleet server (`berth fleet images`)',
  save: 'use `berth image export <ref> <dir>` (an OCI image layout)',
  load: 'use `berth image import <oci-layout | oci-archive.tar | docker-archive.tar>`',
  tag: 'berth names an image when it is imported: `berth image import <source> --tag name:tag`',
  commit: 'berth does not turn containers into images; build images with docker/buildah',
  history: 'use `berth image inspect <ref>` (manifest and config, with the layer history)',
  create: 'berth has no separate create: use `berth run -d` (and `berth start` for a stopped container)',
  attach: 'berth does not attach to running containers: use `berth logs -f <container>` and `berth exec`',
  cp: 'berth has no cp: bind-mount a host directory (`berth run -v /host:/ctr`) or use `berth exec <c> cat <file>`',
  port: 'published ports are shown by `berth ps` and `berth inspect <container>`',
  rename: 'berth cannot rename a container: remove it and `berth run --name` again',
  update:
    'berth cannot change a container’s limits in place: remove it and run it again (or deploy a new target)',
  pause: 'berth does not pause containers: `berth stop` and `berth start` them',
  unpause: 'berth does not pause containers: `berth stop` and `berth start` them',
  wait: 'use `berth logs -f <container>`: it returns when the container exits',
  diff: 'berth has no diff of a container filesystem',
  export: 'use `berth image export <ref> <dir>` for images; berth does not export container filesystems',
  import: 'use `berth image import <source>`',
  network:
    'berth has no network objects on the CLI: `berth run --network bridge|host|none`; app networks come from the compose file (`berth fleet deploy`)',
  volume:
    'named volumes belong to apps (compose `volumes:`); `berth run -v /host/path:/ctr` mounts a host directory',
  compose:
    'deploy a compose file with `berth fleet deploy compose.yml --device D`; check it with `berth target validate compose.yml`',
  swarm: 'berth has no swarm: a fleet server (`berth fleet serve`) deploys targets to devices and groups',
  service: 'berth has no swarm services: services are part of a target (`berth fleet deploy`)',
  stack: 'berth has no stacks: deploy a compose file with `berth fleet deploy compose.yml --device D`',
  node: 'berth has no swarm nodes: `berth fleet devices` lists the fleet’s devices',
  system: 'use `berth storage info`, `berth image prune` and `berth version`',
  context: 'berth has no contexts: point it at a state dir with `--state-dir` (env BERTH_STATE_DIR)',
  plugin: 'berth has no plugins',
  secret: 'berth has no secrets store: mount a host file with `-v` or pass `-e`',
  config: 'berth has no config objects: mount a host file with `-v`; berth’s own config is `--config <file>`',
  manifest: 'use `berth image inspect <ref>` to see an image’s manifest or index',
  trust: 'targets and images pushed to the fleet are signed by the fleet key (`berth fleet keygen`)',
};
