import type { ImageReference } from "./reference.js";

/** The token scope to read a repository (distribution's token spec). */
export function pullScope(image: ImageReference): string {
  return `repository:${image.repository}:pull`;
}

/** The token scope to write a repository; reading comes with it, as Docker asks. */
export function pushScope(image: ImageReference): string {
  return `repository:${image.repository}:pull,push`;
}
