// Where the hub serves the web client's wasm module, beside the console's script.
export const WASM_URL = "/console/herald_client_wasm_bg.wasm";
