//! Mail: the outbox worker that delivers queued messages, the deliverers it hands them to, and
//! the templates that give them their words. Messages are queued by the store in the same
//! transaction as the token they carry; this module only reads the queue, so a message
//! survives a restart or a mail-server outage and is delivered when it can be.

mod deliver;
mod templates;
mod worker;

pub use deliver::{Deliverer, DeliveryError, SmtpUrlError};
pub use templates::{Rendered, TemplateError, Templates};
pub use worker::{MailQueue, Outbox, OutboxSettings, OutboxWorker};
