import type { Readable, Writable } from "node:stream";
import type { StatusResponse } from "../gen/moby/buildkit/v1/control_pb.js";
import type { RegistryAuth } from "../session/auth.js";
import type { TarLimits } from "../session/filesync/tar-source.js";
import type { SecretSource } from "../session/secrets.js";
import type { SshSource } from "../session/ssh.js";

/**
 * A build context: a directory path; a tarball (plain or gzip) as a stream,
 * such as a user's upload, never extracted to disk (any async iterable of
 * bytes will do); or files in memory.
 */
export type ContextInput = string | { tar: Readable | AsyncIterable<Uint8Array> } | { files: Record<string, string | Uint8Array> };

/** Where a build's result goes. */
export type Output =
  /** An image in the daemon's store, pushed to `name` (comma-separated names allowed) with `push`. */
  | {
      type: "image";
      name: string;
      push?: boolean;
      /** Allow a plain-HTTP registry. */
      insecure?: boolean;
      /**
       * With `push`: push the image by its digest only, leaving no tag (BuildKit's
       * `push-by-digest`); each name's tag is dropped and the image is reported as
       * `repository@digest`. How one platform of a multi-platform image is pushed
       * before an index names them all. Needs the `image` exporter: dockerd's
       * embedded BuildKit refuses it (UNIMPLEMENTED).
       */
      pushByDigest?: boolean;
    }
  /**
   * An image loaded into Docker: a dockerd's BuildKit stores it in that
   * dockerd; a standalone BuildKit's goes to `connect()`'s `dockerEngine`,
   * else to the local Docker Engine (`DOCKER_HOST` or /var/run/docker.sock).
   */
  | { type: "docker"; load: true; name?: string }
  /** An archive streamed to a file path or a Writable: docker-load format, an OCI layout, or the result's files. */
  | { type: "docker" | "oci"; dest: string | Writable; name?: string }
  | { type: "tar"; dest: string | Writable }
  /** The result's files written to a directory. */
  | { type: "local"; dest: string };

/**
 * A cache source or destination: `{ type: "registry", ref: "…" }`,
 * `{ type: "inline" }`, or buildx's CSV form `"type=registry,ref=…,mode=max"`.
 */
export type CacheEntry = string | ({ type: string } & Record<string, string>);

export interface BuildOptions {
  context: ContextInput;
  /** The Dockerfile's path inside the context (or relative to it). Default `Dockerfile`. */
  dockerfile?: string;
  /** The Dockerfile's text, when it does not live in the context. */
  dockerfileContent?: string;
  target?: string;
  buildArgs?: Record<string, string>;
  labels?: Record<string, string>;
  /** e.g. `["linux/amd64", "linux/arm64"]`. */
  platforms?: string[];
  /** `true`: no cache for any stage; a list: for those stages. */
  noCache?: boolean | string[];
  /** Always re-resolve base images from their registry. */
  pull?: boolean;
  /** Extra `/etc/hosts` entries: `{ "db.local": "10.0.0.2" }`. */
  addHosts?: Record<string, string>;
  /** Network of RUN steps. `host` needs the daemon to allow the network.host entitlement. */
  network?: "default" | "none" | "host";
  /** Size of /dev/shm for RUN steps, in bytes (BuildKit v0.10+). */
  shmSize?: number;
  /** RUN steps' ulimits, e.g. `{ nofile: { soft: 1024, hard: 2048 } }` (BuildKit v0.10+). */
  ulimits?: Record<string, { soft: number; hard: number }>;
  /**
   * Named contexts (BuildKit v0.10+; refused, as UNIMPLEMENTED, by a daemon
   * older than v0.11, which cannot say its version): `{ base: "docker-image://alpine:3.20" }`
   * or a local context input served through the session.
   */
  extraContexts?: Record<string, string | ContextInput>;
  cacheFrom?: CacheEntry[];
  cacheTo?: CacheEntry[];
  /**
   * A SLSA provenance attestation, as buildx's `--provenance`: `true` or
   * `{ mode: "min" }` records the build's sources and frontend; `{ mode:
   * "max" }` adds its full definition (build args included: keep secrets out
   * of them). Pushed with the image in its index, next to the image
   * manifest. Default: none. Needs a standalone BuildKit v0.11 or later (the
   * build is refused on older ones and on a dockerd's BuildKit).
   */
  provenance?: boolean | { mode: "min" | "max" };
  /** `RUN --mount=type=secret,id=…` sources. Values never appear in logs or errors. */
  secrets?: Record<string, SecretSource>;
  /** `RUN --mount=type=ssh` agents: `"default"` is `$SSH_AUTH_SOCK`. */
  ssh?: SshSource[];
  /** Registry credentials: `~/.docker/config.json` (the default) or given in code. */
  registryAuth?: RegistryAuth;
  /** No outputs: the build runs and its result stays in the cache. */
  outputs?: Output[];
  /**
   * Ceilings for `{ tar }` contexts, which are untrusted input: the size once
   * decompressed (default 8 GiB), the compression ratio (default 100, checked
   * past 64 MiB) and the number of entries (default 1,000,000). A tarball
   * over one is refused with RESOURCE_EXHAUSTED the moment it crosses it.
   */
  tarLimits?: TarLimits;
  /**
   * The session's shared key (Go's `SolveOpt.SharedKey`). The daemon keeps
   * the last upload of each local (`context`, `dockerfile`, named contexts)
   * under this key and the local's name, and a new upload under the same key
   * sends only the files whose size, mode or modification time differ from
   * it. By default every directory has its own key (its path on this host),
   * so a rebuild of one directory sends only what changed; give builds of the
   * same project from different directories (a fresh checkout, an upload
   * unpacked to a new temporary directory) one key, and the second sends
   * only what differs from the first.
   *
   * Files are compared by metadata, not content: use one key only for trees
   * whose changed files get new modification times. A tarball made with
   * fixed times (`tar --mtime`, `git archive`) under a shared key can leave
   * the daemon with an older file of the same size. In-memory files and
   * `dockerfileContent` are safe under any key (their times follow content).
   */
  sharedKey?: string;
  /**
   * A file or directory of a local context that cannot be read (permissions):
   * `"error"` (the default) fails the build with INVALID_ARGUMENT naming it;
   * `"warn"` sends it empty, as Docker's client does, with a `warning` event.
   * A Dockerfile that cannot be read always fails the build.
   */
  onUnreadable?: "error" | "warn";
  /** Aborts the solve, the session and the progress stream. */
  signal?: AbortSignal;
  /**
   * Each status update of the solve as the daemon sent it (the Depot client
   * relays them to Depot's UI). Must not throw or block.
   * @internal
   */
  onStatus?: (status: StatusResponse) => void;
}

/** What a successful build gives back. */
export interface BuildResult {
  /** The job reference the daemon knows the build by. */
  ref: string;
  /** The image (manifest) digest, when an image was produced. */
  digest?: string;
  /** Everything the exporters reported, e.g. `containerimage.digest`, `image.name`. */
  exporterResponse: Record<string, string>;
  /** Images pushed, with the digest the registry now holds. */
  pushed: { name: string; digest?: string }[];
}
