//! Log: what turns a finished exchange into a shipped log record (design §3).
//!
//! - [`body`]: bounded captures of request and response bodies, and their
//!   text form in a record (UTF-8 or base64).
//! - [`redact`]: streaming JSON and form redaction that holds on cut bodies.
//! - [`record`]: the record writer (one JSON object per exchange).
//! - [`queue`]: the per-worker queue of serialized records, batched, byte
//!   bounded, with retry backoff.
//! - [`recorder`]: an exchange to a queued record, and queued batches to the
//!   payloads the Lua sink sends.

pub mod body;
pub mod queue;
pub mod record;
pub mod recorder;
pub mod redact;
