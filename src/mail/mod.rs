//! Mail: the outbox worker that delivers queued messages, the deliverers it hands them to, the
//! templates that give them their words, and the answering of recorded password-reset requests
//! (which queues their messages). Messages are queued by the store in the same transaction as
//! the token they carry, so a message survives a restart or a mail-server outage and is
//! delivered when it can be; a reset request is a row too, answered after a restart if need be.

mod deliver;
mod requests;
mod templates;
mod worker;

pub use deliver::{Deliverer, DeliveryError, SmtpUrlError};
pub use requests::ResetLinks;
pub use templates::{Rendered, TemplateError, Templates};
pub use worker::{MailQueue, Outbox, OutboxSettings, OutboxWorker};
