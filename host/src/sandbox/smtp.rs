//! E-mail (`hookwasm:handler/smtp`), granted per handler by `capabilities.smtp`.
//!
//! The interface is linked two ways (see `Sandbox::load`): a handler whose entry grants SMTP is
//! instantiated with [`SmtpState`]'s `send`, which talks to the granted relay; every other handler
//! gets [`Refused`], which only answers that SMTP is not granted, so a module that can send mail
//! still loads where it may not, and can never reach a relay there. A granted `send` is refused
//! unless:
//! - the message names no relay or the granted one (a handler's config cannot redirect it);
//! - its sender is one of the grant's `from` addresses and every recipient matches
//!   `allowedRecipients`;
//! - its subject is one line (no header injection) and it is at most [`MAX_MESSAGE_BYTES`], with
//!   at most [`MAX_RECIPIENTS`] recipients, and the handler sent fewer than
//!   [`MAX_SENDS_PER_EVENT`] messages during this event.
//!
//! The relay is the operator's explicit choice, so unlike outbound HTTP it may be on loopback
//! or a private network. The whole exchange (connect, TLS, login, transfer) ends with the
//! event's deadline; it runs on the store's fiber, so waiting never holds a runtime thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpGrant, SmtpTls};
use crate::wit;

/// Largest message a handler may send: subject, text and HTML together, before encoding.
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;
/// Most recipients of one message.
pub const MAX_RECIPIENTS: usize = 20;
/// Most messages a handler may send while handling one event (refused ones count too).
pub const MAX_SENDS_PER_EVENT: u32 = 5;
/// How long before the event's deadline a send gives up, so the handler still has time to
/// report the relay's silence as its error instead of being cut off.
const SEND_RESERVE: Duration = Duration::from_millis(50);

/// The SMTP side of one invocation: who the handler is, what it was granted, when it must be
/// done, and how many messages it sent.
#[derive(Debug)]
pub struct SmtpState {
    handler: Arc<str>,
    grant: Option<Arc<SmtpGrant>>,
    deadline: Instant,
    sends: u32,
}

impl SmtpState {
    /// The state of one invocation of `handler`, which must be done by `deadline`.
    pub fn new(handler: Arc<str>, grant: Option<Arc<SmtpGrant>>, deadline: Instant) -> SmtpState {
        SmtpState {
            handler,
            grant,
            deadline,
            sends: 0,
        }
    }

    /// What an ungranted handler sees of this interface.
    pub fn refused(&mut self) -> Refused<'_> {
        Refused(&self.handler)
    }

    fn refuse(&self, why: String) -> String {
        tracing::warn!(handler = %self.handler, "smtp send refused: {why}");
        why
    }

    async fn send(&mut self, message: wit::MailMessage) -> Result<(), String> {
        let Some(grant) = self.grant.clone() else {
            return Err(self.refuse(not_granted(&self.handler)));
        };
        self.sends += 1;
        if self.sends > MAX_SENDS_PER_EVENT {
            return Err(self.refuse(format!(
                "a handler may send at most {MAX_SENDS_PER_EVENT} messages per event"
            )));
        }
        if let Some(relay) = message.relay.as_deref()
            && !grant.is_relay(relay)
        {
            return Err(self.refuse(format!(
                "relay {relay} is not granted to handler {}: its capabilities.smtp.relay is {}",
                self.handler,
                grant.relay()
            )));
        }
        let recipients = message.to.len();
        let email = build(&grant, message).map_err(|why| self.refuse(why))?;
        let left = self
            .deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(SEND_RESERVE);
        if left.is_zero() {
            return Err(
                "too little of the event's deadline is left to send; nothing was sent".into(),
            );
        }
        let transport = transport(&grant, left)?;
        let relay = grant.relay();
        match tokio::time::timeout(left, transport.send(email)).await {
            Ok(Ok(_)) => {
                tracing::info!(handler = %self.handler, %relay, recipients, "e-mail sent");
                Ok(())
            }
            Ok(Err(e)) => Err(format!("{relay} did not take the message: {e}")),
            Err(_) => Err(format!(
                "{relay} did not take the message within the event's deadline (gave up after {} ms)",
                left.as_millis()
            )),
        }
    }
}

impl wit::hookwasm::handler::smtp::Host for SmtpState {
    async fn send(&mut self, message: wit::MailMessage) -> Result<(), String> {
        SmtpState::send(self, message).await
    }
}

/// The refusal an ungranted handler gets.
fn not_granted(handler: &str) -> String {
    format!("smtp is not granted to handler {handler}: add capabilities.smtp to its entry")
}

/// The `smtp` interface as linked for handlers without the grant: every send is refused.
#[derive(Debug)]
pub struct Refused<'a>(&'a str);

impl wit::hookwasm::handler::smtp::Host for Refused<'_> {
    async fn send(&mut self, _message: wit::MailMessage) -> Result<(), String> {
        let why = not_granted(self.0);
        tracing::warn!(handler = %self.0, "smtp send refused: {why}");
        Err(why)
    }
}

/// [`Refused`] as the linker's view of the store.
pub struct RefusedView;

impl wasmtime::component::HasData for RefusedView {
    type Data<'a> = Refused<'a>;
}

/// Checks a message against the grant and the bounds, and builds it.
fn build(grant: &SmtpGrant, message: wit::MailMessage) -> Result<Message, String> {
    let size =
        message.subject.len() + message.text.len() + message.html.as_ref().map_or(0, String::len);
    if size > MAX_MESSAGE_BYTES {
        return Err(format!(
            "the message is {size} bytes; at most {MAX_MESSAGE_BYTES} are allowed"
        ));
    }
    if message.to.is_empty() {
        return Err("the message has no recipient".into());
    }
    if message.to.len() > MAX_RECIPIENTS {
        return Err(format!(
            "the message has {} recipients; at most {MAX_RECIPIENTS} are allowed",
            message.to.len()
        ));
    }
    if message.subject.contains(['\r', '\n']) {
        return Err("the subject contains a line break; it must be one line".into());
    }
    let from = match message.from.as_deref() {
        None => grant
            .from
            .first()
            .cloned()
            .ok_or("capabilities.smtp.from lists no sender")?,
        Some(from) if grant.allows_sender(from) => from.to_owned(),
        Some(from) => {
            return Err(format!(
                "sender {from} is not in capabilities.smtp.from ({})",
                grant.from.join(", ")
            ));
        }
    };
    let from = address(&from, "sender")?;
    let mut builder = Message::builder()
        .from(Mailbox::new(None, from.clone()))
        .subject(message.subject)
        .message_id(Some(format!(
            "<{}@{}>",
            uuid::Uuid::new_v4(),
            from.domain()
        )));
    for to in &message.to {
        if !grant.allows_recipient(to) {
            return Err(format!(
                "recipient {to} is not allowed by capabilities.smtp.allowedRecipients"
            ));
        }
        builder = builder.to(Mailbox::new(None, address(to, "recipient")?));
    }
    if let Some(reply_to) = &message.reply_to {
        builder = builder.reply_to(Mailbox::new(None, address(reply_to, "reply-to")?));
    }
    let built = match message.html {
        None => builder.header(ContentType::TEXT_PLAIN).body(message.text),
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(message.text, html)),
    };
    built.map_err(|e| format!("cannot build the message: {e}"))
}

/// Parses one bare address (`local@domain`, no display name).
fn address(text: &str, what: &str) -> Result<Address, String> {
    text.parse::<Address>()
        .map_err(|e| format!("{what} {text:?} is not a valid address: {e}"))
}

/// A connection to the granted relay for one message, its every step bounded by `left`.
fn transport(
    grant: &SmtpGrant,
    left: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = |host: &str| {
        TlsParameters::new(host.to_owned()).map_err(|e| format!("cannot set up TLS: {e}"))
    };
    let tls = match grant.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::Starttls => Tls::Required(tls(&grant.host)?),
        SmtpTls::Tls => Tls::Wrapper(tls(&grant.host)?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&grant.host)
        .port(grant.port)
        .tls(tls)
        .timeout(Some(left));
    if let Some(login) = &grant.credentials {
        builder = builder.credentials(Credentials::new(
            login.username.clone(),
            login.password.clone(),
        ));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecipientPattern;

    fn grant() -> SmtpGrant {
        SmtpGrant {
            host: "127.0.0.1".into(),
            port: 2525,
            tls: SmtpTls::None,
            from: vec!["notify@example.com".into()],
            allowed_recipients: vec![RecipientPattern::Domain("example.com".into())],
            credentials: None,
        }
    }

    fn message() -> wit::MailMessage {
        wit::MailMessage {
            relay: None,
            from: None,
            to: vec!["reviewers@example.com".into()],
            subject: "Push waiting".into(),
            text: "hello".into(),
            html: None,
            reply_to: None,
        }
    }

    #[test]
    fn a_message_within_the_grant_is_built_from_the_default_sender() {
        let email = build(&grant(), message()).expect("allowed");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        assert!(text.contains("From: notify@example.com\r\n"), "{text}");
        assert!(text.contains("To: reviewers@example.com\r\n"), "{text}");
        assert!(text.contains("Subject: Push waiting\r\n"), "{text}");
    }

    #[test]
    fn messages_outside_the_grant_or_the_bounds_are_refused() {
        type Change = fn(&mut wit::MailMessage);
        let cases: [(Change, &str); 6] = [
            (
                |m| m.from = Some("ceo@example.com".into()),
                "sender ceo@example.com is not in capabilities.smtp.from",
            ),
            (
                |m| m.to = vec!["x@elsewhere.org".into()],
                "recipient x@elsewhere.org is not allowed",
            ),
            (
                |m| m.subject = "hi\r\nBcc: victim@example.com".into(),
                "the subject contains a line break",
            ),
            (
                |m| m.text = "x".repeat(MAX_MESSAGE_BYTES + 1),
                "bytes; at most 262144 are allowed",
            ),
            (
                |m| m.to = vec!["a@example.com".into(); MAX_RECIPIENTS + 1],
                "21 recipients; at most 20",
            ),
            (|m| m.to.clear(), "no recipient"),
        ];
        for (change, expected) in cases {
            let mut m = message();
            change(&mut m);
            let error = build(&grant(), m).expect_err("refused");
            assert!(error.contains(expected), "{error}");
        }
    }

    #[tokio::test]
    async fn an_ungranted_handler_or_another_relay_is_refused_before_any_connection() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ungranted = SmtpState::new("notify".into(), None, deadline);
        let error = ungranted.send(message()).await.expect_err("refused");
        assert_eq!(
            error,
            "smtp is not granted to handler notify: add capabilities.smtp to its entry"
        );
        let mut granted = SmtpState::new("notify".into(), Some(Arc::new(grant())), deadline);
        let mut elsewhere = message();
        elsewhere.relay = Some("smtp://mail.example.com:25".into());
        let error = granted.send(elsewhere).await.expect_err("refused");
        assert_eq!(
            error,
            "relay smtp://mail.example.com:25 is not granted to handler notify: its capabilities.smtp.relay is smtp://127.0.0.1:2525"
        );
    }
}
