/**
 * TLS for a `tcp://` BuildKit address. With `ca`, that CA is the only root
 * trusted (Node's bundled roots are not). `cert` + `key` make it mutual TLS.
 * Values are PEM text or bytes, never file paths: keys need not touch disk.
 */
export interface TlsOptions {
  ca?: string | Uint8Array;
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /**
   * The name the server certificate must carry; defaults to the address
   * host. Depot hands out an IP endpoint plus a server name.
   */
  serverName?: string;
}
