import { FileSend } from "../../gen/moby/filesync/v1/filesync_pb.js";
import type { Attachable } from "../attachable.js";
import { GrpcCode, GrpcStatusError, type ServerCall } from "../grpc-server.js";
import { receiveArchive } from "./archive-receiver.js";
import { receiveTree } from "./diffcopy-receiver.js";
import type { OutputTarget } from "./targets.js";

/** The one method FileSend serves; the daemon calls it once per exporter with a file output. */
export const FILE_SEND_DIFFCOPY = `/${FileSend.typeName}/DiffCopy`;

/** Call metadata naming the exporter (its index in the request); absent before BuildKit v0.13. */
const EXPORTER_ID_KEY = "buildkit-attachable-exporter-id";
/** Prefix of the call metadata carrying the exporter's response (e.g. `exporter-md-containerimage.digest`). */
const EXPORTER_METADATA_PREFIX = "exporter-md-";

export interface FileSendAttachable extends Attachable {
  /**
   * The `exporter-md-*` metadata the daemon sent with exporter `id`'s call,
   * prefix removed (e.g. `{ "containerimage.digest": "sha256:…" }`). Set
   * when the call starts, so complete once the solve has finished; `{}` for
   * an exporter that made no call.
   */
  exporterMetadata(id: number): Record<string, string>;
  /**
   * Resolves once no output is being received any more, its clean-up done
   * (a cut-short local export's staging directory removed): a build settles
   * only after this, so it leaves nothing half-written behind.
   */
  drained(): Promise<void>;
}

/**
 * Serves `moby.filesync.v1.FileSend/DiffCopy`: receives each exporter's
 * output into its target, chosen by the exporter id in the call metadata
 * (0 when a daemon older than v0.13 sends none). `archive` targets get
 * BytesMessage chunks (tar, oci, docker); `directory` targets get an fsutil
 * transfer (local). An id without a target is refused NOT_FOUND, and a
 * second call for the same id FAILED_PRECONDITION (an ended stream cannot
 * take a second archive).
 */
export function fileSendAttachable(targets: ReadonlyMap<number, OutputTarget>): FileSendAttachable {
  const metadataById = new Map<number, Record<string, string>>();
  const receiving = new Set<Promise<unknown>>();

  const diffCopy = async (call: ServerCall): Promise<void> => {
    const id = exporterIdOf(call);
    const target = targets.get(id);
    if (!target) throw new GrpcStatusError(GrpcCode.NOT_FOUND, `no output target for exporter ${id}`);
    if (metadataById.has(id)) throw new GrpcStatusError(GrpcCode.FAILED_PRECONDITION, `the output of exporter ${id} was already received`);
    metadataById.set(id, exporterMetadataOf(call));
    const received = target.kind === "archive" ? receiveArchive(call, target.dest) : receiveTree(call, target.dest);
    receiving.add(received);
    try {
      await received;
    } finally {
      receiving.delete(received);
    }
  };

  return {
    routes: new Map([[FILE_SEND_DIFFCOPY, diffCopy]]),
    exporterMetadata: (id) => ({ ...metadataById.get(id) }),
    drained: async () => {
      await Promise.allSettled([...receiving]);
    },
  };
}

function exporterIdOf(call: ServerCall): number {
  const value = call.metadata.get(EXPORTER_ID_KEY)?.[0];
  if (value === undefined) return 0;
  if (!/^\d{1,9}$/.test(value.trim())) throw new GrpcStatusError(GrpcCode.INVALID_ARGUMENT, `invalid ${EXPORTER_ID_KEY}: ${JSON.stringify(value)}`);
  return Number(value.trim());
}

/** Repeated values are joined with "," as Go's FileSend server does. */
function exporterMetadataOf(call: ServerCall): Record<string, string> {
  const entries: [string, string][] = [];
  for (const [key, values] of call.metadata) {
    if (key.startsWith(EXPORTER_METADATA_PREFIX)) entries.push([key.slice(EXPORTER_METADATA_PREFIX.length), values.join(",")]);
  }
  // fromEntries defines own properties, so a key like "__proto__" stays data.
  return Object.fromEntries(entries);
}
