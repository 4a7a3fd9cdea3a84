// Failure modes a test can ask of the local Depot: Depot outages and slow or
// canceled machines are what no real part here can produce.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { DescService } from "@bufbuild/protobuf";
import { BuildKitNodeError } from "../../errors.js";
import type { LocalDepotFaults, LocalFaultCode } from "./types.js";

const CODES: Record<LocalFaultCode, Code> = {
  unavailable: Code.Unavailable,
  internal: Code.Internal,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  not_found: Code.NotFound,
  deadline_exceeded: Code.DeadlineExceeded,
  aborted: Code.Aborted,
};

export class FaultInjector implements LocalDepotFaults {
  stayPending = false;
  cancelsAt: Date | undefined = undefined;
  /** Queued failures by method key; the oldest is used first. */
  private readonly queued = new Map<string, { remaining: number; code: LocalFaultCode }[]>();
  private readonly knownMethods: Set<string>;

  constructor(services: readonly DescService[]) {
    this.knownMethods = new Set(services.flatMap((s) => s.methods.flatMap((m) => [m.name, `${s.typeName}/${m.name}`])));
  }

  failNext(method: string, count: number, code: LocalFaultCode = "unavailable"): void {
    // A typo would otherwise make a test pass for the wrong reason.
    if (!this.knownMethods.has(method)) throw new BuildKitNodeError("INVALID_ARGUMENT", `the local Depot has no method ${method}`);
    if (!Number.isInteger(count) || count < 0) throw new BuildKitNodeError("INVALID_ARGUMENT", `count must be a whole number, got ${count}`);
    if (!(code in CODES)) throw new BuildKitNodeError("INVALID_ARGUMENT", `unsupported fault code ${code}`);
    if (count === 0) return;
    const queue = this.queued.get(method) ?? [];
    queue.push({ remaining: count, code });
    this.queued.set(method, queue);
  }

  /** Fails the call before any handler runs, as an outage in front of Depot would. */
  readonly interceptor: Interceptor = (next) => async (req) => {
    const failure = this.take(`${req.service.typeName}/${req.method.name}`) ?? this.take(req.method.name);
    if (failure) throw new ConnectError(`injected fault: ${failure}`, CODES[failure]);
    return await next(req);
  };

  private take(key: string): LocalFaultCode | undefined {
    const queue = this.queued.get(key);
    const head = queue?.[0];
    if (!queue || !head) return undefined;
    if (--head.remaining === 0) queue.shift();
    if (queue.length === 0) this.queued.delete(key);
    return head.code;
  }
}
