/** The SDK's version: always the server's (`flare_im.__version__`); a test checks that they agree. */
export const VERSION = "0.1.0";

/** The client protocol version this SDK speaks (docs/protocol.md). */
export const PROTOCOL = 1;
