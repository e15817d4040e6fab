export * from "./keyring.js";
import * as keyring from "./keyring.js";
export default keyring;
