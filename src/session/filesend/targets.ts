/**
 * Where one exporter's output goes, by exporter index (the daemon's exporter
 * id: the exporter's position in the SolveRequest's list).
 *
 * - `archive`: the tar, oci and docker exporters stream one archive as
 *   BytesMessage chunks. `dest` is a file path or a writable stream.
 * - `directory`: the local exporter sends a file tree with fsutil packets;
 *   it is merged into the directory `dest` (created if missing).
 */
export type OutputTarget =
  | { kind: "archive"; dest: string | NodeJS.WritableStream }
  | { kind: "directory"; dest: string };
