//! E-mail: messages sent through the SMTP relay the operator granted the handler.
//!
//! A handler can send mail only when its entry in `proxy.config.json` has `capabilities.smtp`,
//! which names one relay, the sender addresses (`from`) and the recipients (`allowedRecipients`)
//! it may use. Everywhere else [`Message::send`] fails with
//! `smtp is not granted to handler <name>: add capabilities.smtp to its entry`. The host also
//! bounds each message (256 KiB of subject, text and HTML; 20 recipients; a one-line subject),
//! allows 5 messages per event, and ends the exchange with the event's deadline
//! (`limits.timeoutMs`: give a handler that mails a few seconds). Every refusal is an ordinary
//! [`Error`] whose message says which rule refused it.
//!
//! ```no_run
//! use hookwasm_sdk::{Event, Handler, Outcome, Result, mail};
//!
//! #[derive(serde::Deserialize)]
//! struct Mailer {
//!     to: Vec<String>,
//! }
//!
//! impl Handler for Mailer {
//!     fn on_event(&self, event: &Event) -> Result<Outcome> {
//!         mail::Message::to(&self.to)
//!             .subject(format!("hookwasm: {}", event.type_))
//!             .text(format!("Event {} arrived.", event.id))
//!             .send()?;
//!         Ok(Outcome::allow().annotate("mailed", self.to.len()))
//!     }
//! }
//!
//! hookwasm_sdk::export_handler!(Mailer);
//! ```
//!
//! `send` blocks the handler until the relay has taken the message (or refused it). Outside
//! WebAssembly (native unit tests) there is no host: `send` fails with an error saying so.

use crate::Result;

/// One e-mail to build up and [`send`](Message::send):
/// `Message::to(["a@example.com"]).subject(..).text(..).send()`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    relay: Option<String>,
    from: Option<String>,
    to: Vec<String>,
    subject: String,
    text: String,
    html: Option<String>,
    reply_to: Option<String>,
}

impl Message {
    /// A message to these addresses (each must match the grant's `allowedRecipients`).
    pub fn to<I, S>(recipients: I) -> Message
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Message {
            to: recipients
                .into_iter()
                .map(|r| r.as_ref().to_owned())
                .collect(),
            ..Message::default()
        }
    }

    /// The sender; one of the grant's `from` addresses. Without it, the grant's first one.
    pub fn from(mut self, address: impl Into<String>) -> Message {
        self.from = Some(address.into());
        self
    }

    /// The relay the handler expects, `smtp://host[:port]`: the host refuses the message unless
    /// it is the granted relay. Useful when the handler's own config names a relay, so a
    /// mismatch with the operator's grant is an error rather than mail going elsewhere.
    pub fn relay(mut self, relay: impl Into<String>) -> Message {
        self.relay = Some(relay.into());
        self
    }

    /// The subject: one line (a line break fails the send).
    pub fn subject(mut self, subject: impl Into<String>) -> Message {
        self.subject = subject.into();
        self
    }

    /// The plain-text body.
    pub fn text(mut self, text: impl Into<String>) -> Message {
        self.text = text.into();
        self
    }

    /// An HTML alternative to the text body. Escape what you put in it.
    pub fn html(mut self, html: impl Into<String>) -> Message {
        self.html = Some(html.into());
        self
    }

    /// The `Reply-To` address.
    pub fn reply_to(mut self, address: impl Into<String>) -> Message {
        self.reply_to = Some(address.into());
        self
    }

    /// The recipients.
    pub fn recipients(&self) -> &[String] {
        &self.to
    }

    /// Sends the message through the granted relay, blocking until the relay took it.
    ///
    /// `Err` when the host refused it (not granted, another relay, a sender, recipient or size
    /// outside the grant or the bounds) or the relay did not take it in time; the message says
    /// which.
    pub fn send(self) -> Result<()> {
        transport::send(self)
    }
}

#[cfg(target_arch = "wasm32")]
mod transport {
    use super::Message;
    use crate::bindings::hookwasm::handler::smtp;
    use crate::{Error, Result};

    pub(super) fn send(message: Message) -> Result<()> {
        smtp::send(&smtp::Message {
            relay: message.relay,
            from: message.from,
            to: message.to,
            subject: message.subject,
            text: message.text,
            html: message.html,
            reply_to: message.reply_to,
        })
        .map_err(|why| Error::new(format!("e-mail not sent: {why}")))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod transport {
    use super::{Message, Result};
    use crate::Error;

    pub(super) fn send(message: Message) -> Result<()> {
        Err(Error::new(format!(
            "e-mail to {} not sent: hookwasm_sdk::mail sends through the host's smtp interface, \
             which only exists inside the component (run it with `hookwasm serve`)",
            message.to.join(", ")
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn the_builder_keeps_every_part_and_natively_nothing_is_sent() {
        let message = Message::to(["a@example.com", "b@example.com"])
            .from("notify@example.com")
            .relay("smtp://127.0.0.1:2525")
            .subject("s")
            .text("t")
            .html("<p>t</p>")
            .reply_to("r@example.com");
        assert_eq!(message.recipients(), ["a@example.com", "b@example.com"]);
        assert_eq!(message.html.as_deref(), Some("<p>t</p>"));
        let error = message.send().unwrap_err();
        assert!(
            error
                .message()
                .starts_with("e-mail to a@example.com, b@example.com not sent"),
            "{error:?}"
        );
    }
}
