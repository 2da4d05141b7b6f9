//! The outbox on NATS JetStream (`"eventDelivery": {"store": "nats", …}`): every host that names
//! the same servers shares one outbox, so any of them may deliver what another accepted, and a
//! host that dies leaves its work to the others instead of waiting for its restart.
//!
//! Layout (the README's "NATS JetStream" section says the same for operators):
//! - `HOOKWASM_DELIVERIES`, a work-queue stream on `hookwasm.deliveries.<observer>`: one message
//!   per (event, observer), the event's JSON as payload. A message's stream sequence is the
//!   delivery's id. Each observer has a durable pull consumer named after it, shared by every
//!   host, with `max_ack_pending = 1` (one delivery of an observer in flight in the whole
//!   cluster, which keeps accepted order) and `ack_wait` as the lease, kept alive by progress
//!   acks while a handler runs. Success acks (the stream then drops the message); a failure naks
//!   with the retry backoff as delay; a dead letter is written to `hookwasm-dead` and acked.
//! - `HOOKWASM_EVENTS`, the history, kept for `retentionHours` (`max_age`): each event on
//!   `hookwasm.events.<key>.o` (accepted for observers) or `.g` (gates only), where `<key>` is a
//!   hash of `source` and `id`, and its handlers' outcomes on `hookwasm.events.<key>.r`, one
//!   message per record (append-only, so hosts never contend). One stream, so its sequence
//!   orders acceptances and outcomes together. Writing the `.o` record is what makes a later
//!   repeat a duplicate; it is written after the deliveries, so a record means they are all
//!   stored.
//! - Key-value bucket `hookwasm-dead`: dead letters, until an operator acts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, AckKind,
    consumer::{PullConsumer, pull},
    context::PublishErrorKind,
    kv, stream,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use super::settings::{NatsConfig, Secret, default_host_id, defaults};
use super::{
    Accepted, Counts, DeadLetter, Delivery, EventRecord, Feed, FeedFilter, FeedItem, Gauge,
    HistoryFilter, Millis, NewEvent, OnDuplicate, Outcome, Selector, Store, StoreError,
    StoreFuture,
};

const EVENTS: &str = "HOOKWASM_EVENTS";
const DELIVERIES: &str = "HOOKWASM_DELIVERIES";
const DEAD: &str = "hookwasm-dead";
/// How long a claim waits at the server for a delivery before it reports none.
const CLAIM_WAIT: Duration = Duration::from_millis(1_000);
/// How many of the newest history messages (events and outcomes) a listing, or a look-up
/// without `source`, reads.
const HISTORY_SCAN: u64 = 20_000;
/// How long a request to JetStream may take before the store reports it unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const H_EVENT_ID: &str = "Hookwasm-Event-Id";
const H_EVENT_TYPE: &str = "Hookwasm-Event-Type";
const H_KEY: &str = "Hookwasm-Key";
const H_ACCEPTED_AT: &str = "Hookwasm-Accepted-At";

/// The outbox on JetStream. Cheap to clone.
///
/// Unlike SQLite's, its futures start their work when first polled, not when made: the
/// dispatcher awaits each record before the claim made after it, which keeps the trait's
/// ordering promise for the way it is used.
#[derive(Clone)]
pub struct NatsStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    events: stream::Stream,
    deliveries: stream::Stream,
    dead: kv::Store,
    ack_wait: Duration,
    host: String,
    replicas: usize,
    /// Each observer's consumer, once looked up or created.
    consumers: Mutex<HashMap<String, PullConsumer>>,
    /// Deliveries this host holds, by id, until they are settled.
    claimed: Mutex<HashMap<i64, Claimed>>,
    /// Ids of deliveries that `replay` makes itself (never published): negative.
    local_ids: AtomicI64,
    /// Bumped after every history write of this host, so its streams wake at once (other
    /// hosts' writes are found by polling).
    changed: tokio::sync::watch::Sender<u64>,
}

/// Feed ids per history message: a feed id is `sequence * FEED_SLOTS + index`, the index being
/// the outcome's place in its message (an acceptance is index 0), so ids never repeat and grow
/// with the stream.
const FEED_SLOTS: i64 = 1024;

/// A delivery this host holds.
struct Claimed {
    handler: String,
    event_id: String,
    event_type: String,
    key: String,
    accepted_at: Millis,
    attempt: u32,
    json: String,
    /// The JetStream message, `None` for a `replay` delivery that was never published.
    message: Option<Arc<jetstream::Message>>,
    /// Sends progress acks while the delivery is held.
    heartbeat: Option<tokio::task::AbortHandle>,
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
    }
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore")
            .field("host", &self.inner.host)
            .field("replicas", &self.inner.replicas)
            .finish_non_exhaustive()
    }
}

/// The event as the history stream keeps it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    subject: Option<String>,
    accepted_at: Millis,
    handlers: Vec<String>,
    event: String,
}

/// A dead letter as `hookwasm-dead` keeps it.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Dead {
    id: i64,
    handler: String,
    event_id: String,
    event_type: String,
    key: String,
    attempts: u32,
    cause: String,
    accepted_at: Millis,
    dead_at: Millis,
    event: String,
}

/// Errors of NATS calls, whose types differ by call; kept as a [`StoreError`]'s source.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Turns a failed NATS call's error into a [`StoreError`] that says `what` failed.
fn fail(what: &str) -> Fail<'_> {
    Fail(what)
}

/// What failed, for [`fail`]; [`Fail::of`] takes the cause, whatever its type.
#[derive(Clone, Copy)]
struct Fail<'a>(&'a str);

impl Fail<'_> {
    fn of(self, e: impl std::fmt::Display + Into<BoxError>) -> StoreError {
        StoreError::nats(format!("on NATS: {}: {e}", self.0), e)
    }
}

/// The server list with any `user:password@` removed, for messages and logs.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let server = server.trim();
            match (server.find("://"), server.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}://{}", &server[..scheme], &server[at + 1..])
                }
                _ => server.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An observer's name as a subject token and consumer name: itself when it is only letters,
/// digits, `-` and `_`; else `=` and its hex (names may hold `.`, which NATS reserves).
fn token(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_owned()
    } else {
        format!("={}", hex::encode(name))
    }
}

/// The observer a [`token`] stands for.
fn untoken(token: &str) -> String {
    match token.strip_prefix('=') {
        Some(encoded) => hex::decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_else(|| token.to_owned()),
        None => token.to_owned(),
    }
}

/// An event's key: identifies `source` + `id` in subjects, message ids and bucket keys.
pub fn event_key(source: &str, id: &str) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(source.as_bytes())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

fn delivery_subject(handler: &str) -> String {
    format!("hookwasm.deliveries.{}", token(handler))
}

fn millis(nanos: i128) -> Millis {
    i64::try_from(nanos / 1_000_000).unwrap_or(0)
}

fn header(headers: Option<&HeaderMap>, name: &str) -> String {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

impl NatsStore {
    /// Connects, checks that JetStream is there, and creates the streams, buckets and
    /// consumers' home if they are missing. Every failure is one line naming the address (without
    /// credentials) and what to do.
    pub async fn connect(
        config: &NatsConfig,
        retention: Duration,
    ) -> Result<NatsStore, StoreError> {
        let url = redacted(&config.url);
        let host = config.host_id.clone().unwrap_or_else(default_host_id);
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("hookwasm {host}"))
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(None::<usize>);
        if let Some(file) = &config.creds_file {
            options = options.credentials_file(file).await.map_err(|e| {
                let message = format!(
                    "cannot read eventDelivery.credsFile {}: {e}",
                    file.display()
                );
                StoreError::io(message, e)
            })?;
        }
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.0.clone());
        }
        if let Some(token) = &config.token {
            options = options.token(token.0.clone());
        }
        if let Some(ca) = &config.tls_ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        let servers: Vec<async_nats::ServerAddr> = config
            .url
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| {
                let message = format!("eventDelivery.url {url} is not a NATS address: {e}");
                StoreError::nats(message, e)
            })?;
        let client = options.connect(servers).await.map_err(|e| {
            use async_nats::ConnectErrorKind as Kind;
            let message = match e.kind() {
                Kind::Authentication | Kind::AuthorizationViolation => format!(
                    "on NATS at {url}: the server refused hookwasm's credentials ({e}); check eventDelivery's credsFile, user/password or token"
                ),
                Kind::Tls => format!(
                    "on NATS at {url}: TLS failed ({e}); check the server's certificate and eventDelivery.tlsCaFile"
                ),
                _ => format!(
                    "on NATS at {url}: cannot connect ({e}); is nats-server running there?"
                ),
            };
            StoreError::nats(message, e)
        })?;
        let info = client.server_info();
        if !info.jetstream {
            return Err(StoreError::refused(format!(
                "on NATS at {url}: JetStream is disabled on server {}; start nats-server with -js (or a `jetstream {{}}` block in its config)",
                info.server_name
            )));
        }
        let mut js = jetstream::new(client.clone());
        js.set_timeout(REQUEST_TIMEOUT);
        // `connect_urls` lists the cluster's servers (empty for a lone server).
        let replicas = config
            .replicas
            .unwrap_or_else(|| info.connect_urls.len().clamp(1, 3));
        let setup = |e: BoxError| {
            let message = format!(
                "on NATS at {url}: cannot set up hookwasm's streams ({e}); does this account have JetStream?"
            );
            StoreError::nats(message, e)
        };
        let events = get_or_create_stream(
            &js,
            stream::Config {
                name: EVENTS.to_owned(),
                description: Some("hookwasm: accepted events (history)".to_owned()),
                subjects: vec!["hookwasm.events.>".to_owned()],
                max_age: retention,
                duplicate_window: config.dedupe_window.min(retention),
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(setup)?;
        let deliveries = get_or_create_stream(
            &js,
            stream::Config {
                name: DELIVERIES.to_owned(),
                description: Some("hookwasm: observers' deliveries (work queue)".to_owned()),
                subjects: vec!["hookwasm.deliveries.*".to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: config.dedupe_window,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await
        .map_err(setup)?;
        let dead = get_or_create_bucket(&js, DEAD, Duration::ZERO, replicas)
            .await
            .map_err(setup)?;
        tracing::info!(
            servers = %url,
            server = %info.server_name,
            replicas,
            host = %host,
            "outbox on NATS JetStream"
        );
        Ok(NatsStore {
            inner: Arc::new(Inner {
                client,
                js,
                events,
                deliveries,
                dead,
                ack_wait: config.ack_wait,
                host,
                replicas,
                consumers: Mutex::new(HashMap::new()),
                claimed: Mutex::new(HashMap::new()),
                local_ids: AtomicI64::new(0),
                changed: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    /// This host's id.
    pub fn host(&self) -> &str {
        &self.inner.host
    }
}

async fn get_or_create_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, BoxError> {
    // Two hosts starting together may race to create it: the loser finds it on a second look.
    match js.get_or_create_stream(config.clone()).await {
        Ok(stream) => Ok(stream),
        Err(_) => js.get_or_create_stream(config).await.map_err(Into::into),
    }
}

async fn get_or_create_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, BoxError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    // The bucket's stream made directly, as the KV convention lays it out: async-nats's
    // `create_key_value` first reads the account's limits in a form nats-server 2.9 (Debian's)
    // does not answer with.
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    };
    get_or_create_stream(js, config).await?;
    js.get_key_value(bucket).await.map_err(Into::into)
}

impl Inner {
    fn lock_claimed(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Claimed>> {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails at once while the connection is down, so a producer hears 503 without waiting.
    fn connected(&self) -> Result<(), StoreError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(StoreError::refused(format!(
                "NATS is unreachable ({state}); reconnecting"
            ))),
        }
    }

    /// `handler`'s durable consumer, created the first time any host asks for it.
    async fn consumer(&self, handler: &str) -> Result<PullConsumer, StoreError> {
        if let Some(consumer) = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(handler)
        {
            return Ok(consumer.clone());
        }
        let name = token(handler);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(handler.to_owned()),
            filter_subject: delivery_subject(handler),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: 1,
            max_deliver: -1,
            ..Default::default()
        };
        let consumer: PullConsumer = match self
            .deliveries
            .get_or_create_consumer(&name, config.clone())
            .await
        {
            Ok(consumer) => consumer,
            Err(_) => self
                .deliveries
                .get_or_create_consumer(&name, config)
                .await
                .map_err(|e| fail("cannot create the observer's consumer").of(e))?,
        };
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handler.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// Appends `outcomes` to the history of the event `key`: one message, whoever writes.
    async fn append_outcomes(&self, key: &str, outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        let failed = fail("cannot record outcomes");
        let payload = serde_json::to_vec(&outcomes).map_err(|e| failed.of(e))?;
        self.js
            .publish(format!("hookwasm.events.{key}.r"), payload.into())
            .await
            .map_err(|e| failed.of(e))?
            .await
            .map_err(|e| failed.of(e))?;
        Ok(())
    }

    /// Every outcome recorded for the event `key`, oldest first.
    async fn outcomes_of(&self, key: &str) -> Vec<Outcome> {
        let subject = format!("hookwasm.events.{key}.r");
        let mut all = Vec::new();
        let mut from = 0;
        while let Ok(message) = self
            .events
            .get_first_raw_message_by_subject(&subject, from)
            .await
        {
            if let Ok(outcomes) = serde_json::from_slice::<Vec<Outcome>>(&message.payload) {
                all.extend(outcomes);
            }
            from = message.sequence + 1;
        }
        all
    }

    /// The newest history record on `subject`, with its sequence.
    async fn last_record(&self, subject: &str) -> Result<Option<(i64, Record)>, StoreError> {
        match self.events.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(serde_json::from_slice(&message.payload)
                .ok()
                .map(|record| (message.sequence as i64, record))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(fail("cannot read the history").of(e)),
        }
    }

    /// The event record stored as `seq`, with its key; `None` for an outcome message.
    async fn record_at(&self, seq: u64) -> Option<(String, Record)> {
        let message = self.events.get_raw_message(seq).await.ok()?;
        let mut tokens = message.subject.split('.').skip(2);
        let (key, kind) = (tokens.next()?, tokens.next()?);
        if kind == "r" {
            return None;
        }
        Some((
            key.to_owned(),
            serde_json::from_slice(&message.payload).ok()?,
        ))
    }

    fn to_event_record(&self, seq: i64, record: Record, outcomes: Vec<Outcome>) -> EventRecord {
        EventRecord {
            id: record.id,
            source: record.source,
            event_type: record.event_type,
            subject: record.subject,
            accepted_at: record.accepted_at,
            seq,
            event: serde_json::from_str(&record.event).unwrap_or(serde_json::Value::Null),
            outcomes,
        }
    }

    /// Stores a batch in three rounds, each sent in full before its acknowledgements are
    /// awaited: look-ups of earlier records, then every delivery (in event order: JetStream keeps
    /// one connection's messages in order, so an observer's stay in accepted order), then the
    /// records.
    async fn accept(
        &self,
        events: Vec<NewEvent>,
        on_duplicate: OnDuplicate,
        lease: Option<Duration>,
        now: Millis,
    ) -> Result<Vec<Accepted>, StoreError> {
        self.connected()?;
        let publish = fail("cannot store the event");
        let keys: Vec<String> = events.iter().map(|e| event_key(&e.source, &e.id)).collect();
        let subjects: Vec<String> = events
            .iter()
            .zip(&keys)
            .map(|(e, key)| {
                format!(
                    "hookwasm.events.{key}.{}",
                    if e.for_observers { "o" } else { "g" }
                )
            })
            .collect();
        let once: Vec<bool> = events
            .iter()
            .map(|e| on_duplicate == OnDuplicate::Skip && e.for_observers)
            .collect();
        let (once_ref, subjects_ref) = (&once, &subjects);
        let earlier = futures_util::future::join_all((0..events.len()).map(|i| {
            let subject = &subjects_ref[i];
            async move {
                match once_ref[i] {
                    true => self.last_record(subject).await,
                    false => Ok(None),
                }
            }
        }))
        .await;
        let mut earlier: Vec<Option<i64>> = earlier
            .into_iter()
            .map(|r| r.map(|found| found.map(|(seq, _)| seq)))
            .collect::<Result<_, _>>()?;
        let found_before: Vec<bool> = earlier.iter().map(Option::is_some).collect();

        // Deliveries of the events not stored before.
        let mut deliveries: Vec<Vec<i64>> = vec![Vec::new(); events.len()];
        let mut pending = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if earlier[i].is_some() {
                continue;
            }
            for handler in &event.handlers {
                if lease.is_some() {
                    // `replay` makes these itself; only a failure joins the shared queue.
                    let id = self.local_ids.fetch_sub(1, Relaxed) - 1;
                    self.lock_claimed().insert(
                        id,
                        Claimed {
                            handler: handler.clone(),
                            event_id: event.id.clone(),
                            event_type: event.event_type.clone(),
                            key: keys[i].clone(),
                            accepted_at: now,
                            attempt: 1,
                            json: event.json.clone(),
                            message: None,
                            heartbeat: None,
                        },
                    );
                    deliveries[i].push(id);
                    continue;
                }
                let mut headers = HeaderMap::new();
                headers.insert(H_EVENT_ID, event.id.as_str());
                headers.insert(H_EVENT_TYPE, event.event_type.as_str());
                headers.insert(H_KEY, keys[i].as_str());
                headers.insert(H_ACCEPTED_AT, now.to_string().as_str());
                if once[i] {
                    // A retry of a request that was partly stored completes it.
                    headers.insert(
                        async_nats::header::NATS_MESSAGE_ID,
                        format!("{}.{}", keys[i], token(handler)).as_str(),
                    );
                }
                let ack = self
                    .js
                    .publish_with_headers(
                        delivery_subject(handler),
                        headers,
                        event.json.clone().into(),
                    )
                    .await
                    .map_err(|e| publish.of(e))?;
                pending.push((i, ack));
            }
        }
        for (i, ack) in pending {
            deliveries[i].push(ack.await.map_err(|e| publish.of(e))?.sequence as i64);
        }

        // The records: only the first writer of an event's `.o` record wins, however late a
        // repeat comes.
        let mut records = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if earlier[i].is_some() {
                continue;
            }
            let record = Record {
                id: event.id.clone(),
                source: event.source.clone(),
                event_type: event.event_type.clone(),
                subject: event.subject.clone(),
                accepted_at: now,
                handlers: event.handlers.clone(),
                event: event.json.clone(),
            };
            let payload = serde_json::to_vec(&record).map_err(|e| publish.of(e))?;
            let mut message = jetstream::message::PublishMessage::build().payload(payload.into());
            if once[i] {
                message = message
                    .message_id(&keys[i])
                    .expected_last_subject_sequence(0);
            }
            let ack = self
                .js
                .send_publish(subjects[i].clone(), message)
                .await
                .map_err(|e| publish.of(e))?;
            records.push((i, ack));
        }
        let mut duplicate = vec![false; events.len()];
        for (i, ack) in records {
            match ack.await {
                Ok(ack) => {
                    duplicate[i] = ack.duplicate;
                    earlier[i] = Some(ack.sequence as i64);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Stored meanwhile by another request (or earlier in this one); the
                    // deliveries had the same message ids, so only one set exists.
                    duplicate[i] = true;
                    earlier[i] = Some(
                        self.last_record(&subjects[i])
                            .await?
                            .map_or(0, |(seq, _)| seq),
                    );
                }
                Err(e) => return Err(publish.of(e)),
            }
        }
        Ok(earlier
            .into_iter()
            .zip(deliveries)
            .zip(duplicate.into_iter().zip(found_before))
            .map(|((seq, deliveries), (stored_meanwhile, found_before))| {
                let duplicate = stored_meanwhile || found_before;
                Accepted {
                    duplicate,
                    deliveries: if duplicate { Vec::new() } else { deliveries },
                    seq: seq.unwrap_or(0),
                }
            })
            .collect())
    }

    async fn claim(self: Arc<Self>, handler: String) -> Result<Vec<Delivery>, StoreError> {
        self.connected()?;
        let consumer = self.consumer(&handler).await?;
        let failed = fail("cannot claim a delivery");
        let batch = consumer
            .batch()
            .max_messages(1)
            .expires(CLAIM_WAIT)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                // The consumer may be gone (a server that lost its state): look it up again.
                self.consumers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&handler);
                return Err(failed.of(e));
            }
        };
        let mut claimed = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| failed.of(e))?;
            let (id, attempt, published) = {
                let info = message.info().map_err(|e| failed.of(e))?;
                (
                    info.stream_sequence as i64,
                    u32::try_from(info.delivered).unwrap_or(u32::MAX),
                    millis(info.published.unix_timestamp_nanos()),
                )
            };
            let headers = message.headers.as_ref();
            let accepted_at = header(headers, H_ACCEPTED_AT).parse().unwrap_or(published);
            let json = String::from_utf8_lossy(&message.payload).into_owned();
            let delivery = Delivery {
                id,
                handler: handler.clone(),
                event_id: header(headers, H_EVENT_ID),
                event_json: json.clone(),
                attempt,
                accepted_at,
            };
            let message = Arc::new(message);
            let heartbeat = {
                let (message, every) = (message.clone(), self.ack_wait / 3);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                })
                .abort_handle()
            };
            self.lock_claimed().insert(
                id,
                Claimed {
                    handler: handler.clone(),
                    event_id: delivery.event_id.clone(),
                    event_type: header(message.headers.as_ref(), H_EVENT_TYPE),
                    key: header(message.headers.as_ref(), H_KEY),
                    accepted_at,
                    attempt,
                    json,
                    message: Some(message),
                    heartbeat: Some(heartbeat),
                },
            );
            claimed.push(delivery);
        }
        Ok(claimed)
    }

    /// Settles a held delivery with `kind` (and a confirmation from the server).
    async fn settle(&self, delivery: i64, kind: AckKind) -> Result<Option<Claimed>, StoreError> {
        let Some(claimed) = self.lock_claimed().remove(&delivery) else {
            return Ok(None);
        };
        if let Some(message) = &claimed.message {
            message
                .double_ack_with(kind)
                .await
                .map_err(|e| fail("cannot record the attempt").of(e))?;
        }
        Ok(Some(claimed))
    }

    async fn retry_later(
        &self,
        delivery: i64,
        retry_at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let delay = Duration::from_millis(u64::try_from(retry_at - now).unwrap_or(0));
        let local = self
            .lock_claimed()
            .get(&delivery)
            .is_some_and(|c| c.message.is_none());
        if local {
            // A `replay` delivery that failed joins the shared queue, where workers retry it.
            let claimed = self.lock_claimed().remove(&delivery);
            if let Some(c) = claimed {
                self.publish_delivery(
                    &c.handler,
                    &c.event_id,
                    &c.event_type,
                    &c.key,
                    c.accepted_at,
                    &c.json,
                    None,
                )
                .await?;
            }
            return Ok(());
        }
        self.settle(delivery, AckKind::Nak(Some(delay)))
            .await
            .map(drop)
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_delivery(
        &self,
        handler: &str,
        event_id: &str,
        event_type: &str,
        key: &str,
        accepted_at: Millis,
        json: &str,
        message_id: Option<String>,
    ) -> Result<i64, StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(H_EVENT_ID, event_id);
        headers.insert(H_EVENT_TYPE, event_type);
        headers.insert(H_KEY, key);
        headers.insert(H_ACCEPTED_AT, accepted_at.to_string().as_str());
        if let Some(id) = message_id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        let failed = fail("cannot queue the delivery");
        let ack = self
            .js
            .publish_with_headers(delivery_subject(handler), headers, json.to_owned().into())
            .await
            .map_err(|e| failed.of(e))?
            .await
            .map_err(|e| failed.of(e))?;
        Ok(ack.sequence as i64)
    }

    async fn dead_letter(
        &self,
        delivery: i64,
        cause: String,
        now: Millis,
    ) -> Result<(), StoreError> {
        let Some(claimed) = self.lock_claimed().remove(&delivery) else {
            return Ok(());
        };
        let id = if delivery < 0 {
            // A `replay` delivery has no stream sequence: give it one of the queue's.
            now
        } else {
            delivery
        };
        let dead = Dead {
            id,
            handler: claimed.handler.clone(),
            event_id: claimed.event_id.clone(),
            event_type: claimed.event_type.clone(),
            key: claimed.key.clone(),
            attempts: claimed.attempt,
            cause,
            accepted_at: claimed.accepted_at,
            dead_at: now,
            event: claimed.json.clone(),
        };
        let failed = fail("cannot store the dead letter");
        let value = serde_json::to_vec(&dead).map_err(|e| failed.of(e))?;
        // Written before the delivery is acked: a crash in between dead-letters it again, under
        // the same key.
        self.dead
            .put(format!("{}.{id}", token(&claimed.handler)), value.into())
            .await
            .map_err(|e| failed.of(e))?;
        if let Some(message) = &claimed.message {
            message.double_ack().await.map_err(|e| failed.of(e))?;
        }
        Ok(())
    }

    /// Every dead letter matching `selector`, lowest id first, with its bucket key.
    async fn dead_matching(&self, selector: &Selector) -> Result<Vec<(String, Dead)>, StoreError> {
        self.connected()?;
        let failed = fail("cannot read the dead letters");
        let mut keys = self.dead.keys().await.map_err(|e| failed.of(e))?;
        let wanted_token = selector.handler.as_deref().map(token);
        let mut found = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| failed.of(e))?;
            let Some((handler, id)) = key.rsplit_once('.') else {
                continue;
            };
            if wanted_token.as_deref().is_some_and(|t| t != handler)
                || selector.id.is_some_and(|want| id.parse() != Ok(want))
            {
                continue;
            }
            let Some(value) = self.dead.get(&key).await.map_err(|e| failed.of(e))? else {
                continue;
            };
            let Ok(dead) = serde_json::from_slice::<Dead>(&value) else {
                continue;
            };
            if selector
                .event_id
                .as_ref()
                .is_some_and(|e| *e != dead.event_id)
            {
                continue;
            }
            found.push((key, dead));
        }
        found.sort_by_key(|(_, dead)| dead.id);
        Ok(found)
    }

    async fn gauges(&self) -> Result<Vec<Gauge>, StoreError> {
        self.connected()?;
        let failed = fail("cannot read the consumers");
        let mut by_handler: BTreeMap<String, Gauge> = BTreeMap::new();
        let mut consumers = self.deliveries.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| failed.of(e))?;
            let handler = info
                .config
                .description
                .clone()
                .unwrap_or_else(|| untoken(&info.name));
            let open = info.num_pending + info.num_ack_pending as u64;
            let oldest_open_at = if open > 0 {
                self.deliveries
                    .get_first_raw_message_by_subject(delivery_subject(&handler), 0)
                    .await
                    .ok()
                    .map(|m| millis(m.time.unix_timestamp_nanos()))
            } else {
                None
            };
            by_handler.insert(
                handler.clone(),
                Gauge {
                    handler,
                    open,
                    dead: 0,
                    oldest_open_at,
                    lag: Some(info.num_pending),
                },
            );
        }
        let mut keys = self.dead.keys().await.map_err(|e| failed.of(e))?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| failed.of(e))?;
            if let Some((handler, _)) = key.rsplit_once('.') {
                let handler = untoken(handler);
                by_handler
                    .entry(handler.clone())
                    .or_insert_with(|| Gauge {
                        handler,
                        ..Gauge::default()
                    })
                    .dead += 1;
            }
        }
        Ok(by_handler.into_values().collect())
    }

    async fn counts(&self) -> Result<Vec<Counts>, StoreError> {
        let gauges = self.gauges().await?;
        let mut counts = Vec::with_capacity(gauges.len());
        for gauge in gauges {
            let (mut pending, mut claimed, mut retrying) = (gauge.open, 0, 0);
            if let Ok(info) = self.deliveries.consumer_info(token(&gauge.handler)).await {
                pending = info.num_pending;
                claimed = info.num_ack_pending as u64;
                retrying = info.num_redelivered as u64;
            }
            counts.push(Counts {
                handler: gauge.handler,
                pending,
                claimed,
                done: 0,
                dead: gauge.dead,
                retrying,
                oldest_open_at: gauge.oldest_open_at,
            });
        }
        Ok(counts)
    }

    /// The feed after `after`: acceptances (`.o`/`.g` records) and outcomes (`.r` messages) in
    /// stream order. An outcome message's outcomes are never split across pages.
    async fn feed(&self, after: i64, filter: FeedFilter, limit: usize) -> Result<Feed, StoreError> {
        self.connected()?;
        let info = self
            .events
            .get_info()
            .await
            .map_err(|e| fail("cannot read the history").of(e))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let head =
            i64::try_from(last).unwrap_or(i64::MAX / FEED_SLOTS) * FEED_SLOTS + FEED_SLOTS - 1;
        // What `max_age` removed: everything before the first message left.
        let pruned_through = (i64::try_from(first).unwrap_or(0) - 1).max(0) * FEED_SLOTS;
        let mut items = Vec::new();
        let mut seq = u64::try_from(after.max(-1) / FEED_SLOTS)
            .unwrap_or(0)
            .max(first)
            .max(1);
        let mut records: HashMap<String, (i64, Record)> = HashMap::new();
        while seq <= last && items.len() < limit {
            let Ok(message) = self.events.get_raw_message(seq).await else {
                seq += 1;
                continue;
            };
            let base = seq as i64 * FEED_SLOTS;
            let mut tokens = message.subject.split('.').skip(2);
            let (Some(key), Some(kind)) = (tokens.next(), tokens.next()) else {
                seq += 1;
                continue;
            };
            let fresh = |index: i64| base + index > after;
            if kind == "r" {
                let outcomes: Vec<Outcome> =
                    serde_json::from_slice(&message.payload).unwrap_or_default();
                let record = match records.get(key) {
                    Some(found) => Some(found.clone()),
                    None => {
                        let observed = self
                            .last_record(&format!("hookwasm.events.{key}.o"))
                            .await?;
                        let found = match observed {
                            Some(found) => Some(found),
                            None => {
                                self.last_record(&format!("hookwasm.events.{key}.g"))
                                    .await?
                            }
                        };
                        if let Some(found) = &found {
                            records.insert(key.to_owned(), found.clone());
                        }
                        found
                    }
                };
                let Some((record_seq, record)) = record else {
                    seq += 1;
                    continue;
                };
                if feed_matches(&filter, &record) {
                    for (index, outcome) in outcomes.into_iter().enumerate() {
                        let index = i64::try_from(index)
                            .unwrap_or(FEED_SLOTS - 1)
                            .min(FEED_SLOTS - 1);
                        if fresh(index)
                            && filter
                                .handler
                                .as_ref()
                                .is_none_or(|h| *h == outcome.handler)
                        {
                            items.push(feed_item(
                                base + index,
                                record_seq,
                                &record,
                                None,
                                Some(outcome),
                            ));
                        }
                    }
                }
            } else if let Ok(record) = serde_json::from_slice::<Record>(&message.payload) {
                records.insert(key.to_owned(), (seq as i64, record.clone()));
                if fresh(0) && filter.handler.is_none() && feed_matches(&filter, &record) {
                    let event = serde_json::from_str(&record.event).ok();
                    items.push(feed_item(base, seq as i64, &record, event, None));
                }
            }
            seq += 1;
        }
        Ok(Feed {
            items,
            head,
            pruned_through,
        })
    }

    async fn events(
        &self,
        filter: HistoryFilter,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.connected()?;
        let info = self
            .events
            .get_info()
            .await
            .map_err(|e| fail("cannot read the history").of(e))?;
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut seq = match filter.before {
            Some(before) => (u64::try_from(before).unwrap_or(0))
                .saturating_sub(1)
                .min(last),
            None => last,
        };
        let floor = first.max(seq.saturating_sub(HISTORY_SCAN));
        let mut seen = std::collections::HashSet::new();
        let mut found = Vec::new();
        while seq >= floor.max(1) && found.len() < limit {
            if let Some((key, record)) = self.record_at(seq).await
                && seen.insert(key.clone())
                && filter
                    .subject
                    .as_ref()
                    .is_none_or(|s| Some(s) == record.subject.as_ref())
                && filter
                    .event_type
                    .as_ref()
                    .is_none_or(|t| *t == record.event_type)
            {
                let outcomes = self.outcomes_of(&key).await;
                let handled = filter.handler.as_ref().is_none_or(|h| {
                    record.handlers.contains(h) || outcomes.iter().any(|o| o.handler == *h)
                });
                if handled {
                    found.push(self.to_event_record(seq as i64, record, outcomes));
                }
            }
            seq -= 1;
        }
        Ok(found)
    }

    async fn event(
        &self,
        id: String,
        source: Option<String>,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.connected()?;
        let Some(source) = source else {
            // Without a source the key is unknown: look through the newest events.
            let info = self
                .events
                .get_info()
                .await
                .map_err(|e| fail("cannot read the history").of(e))?;
            let (first, last) = (info.state.first_sequence, info.state.last_sequence);
            let mut seq = last;
            while seq >= first.max(last.saturating_sub(HISTORY_SCAN)).max(1) {
                if let Some((key, record)) = self.record_at(seq).await
                    && record.id == id
                {
                    let outcomes = self.outcomes_of(&key).await;
                    return Ok(Some(self.to_event_record(seq as i64, record, outcomes)));
                }
                seq -= 1;
            }
            return Ok(None);
        };
        let key = event_key(&source, &id);
        let observed = self
            .last_record(&format!("hookwasm.events.{key}.o"))
            .await?;
        let gated = self
            .last_record(&format!("hookwasm.events.{key}.g"))
            .await?;
        let newest = match (observed, gated) {
            (Some(o), Some(g)) => Some(if o.0 > g.0 { o } else { g }),
            (o, g) => o.or(g),
        };
        match newest {
            Some((seq, record)) => {
                let outcomes = self.outcomes_of(&key).await;
                Ok(Some(self.to_event_record(seq, record, outcomes)))
            }
            None => Ok(None),
        }
    }
}

/// Whether a history record passes a feed filter's type and subject.
fn feed_matches(filter: &FeedFilter, record: &Record) -> bool {
    filter
        .event_type
        .as_ref()
        .is_none_or(|t| *t == record.event_type)
        && filter
            .subject
            .as_ref()
            .is_none_or(|s| Some(s) == record.subject.as_ref())
}

fn feed_item(
    id: i64,
    seq: i64,
    record: &Record,
    event: Option<serde_json::Value>,
    outcome: Option<Outcome>,
) -> FeedItem {
    FeedItem {
        id,
        seq,
        event_id: record.id.clone(),
        source: record.source.clone(),
        event_type: record.event_type.clone(),
        subject: record.subject.clone(),
        accepted_at: record.accepted_at,
        event,
        outcome,
    }
}

impl Store for NatsStore {
    fn durable(&self) -> bool {
        true
    }

    fn backend(&self) -> super::Backend {
        super::Backend {
            store: "nats".to_owned(),
            host: self.inner.host.clone(),
        }
    }

    fn accept(
        &self,
        events: Vec<NewEvent>,
        on_duplicate: OnDuplicate,
        lease: Option<Duration>,
        now: Millis,
    ) -> StoreFuture<Vec<Accepted>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let accepted = inner.accept(events, on_duplicate, lease, now).await;
            inner.changed.send_modify(|n| *n += 1);
            accepted
        })
    }

    /// One delivery at most: the consumer lets one of an observer's deliveries out at a time,
    /// across every host. `lease` is the consumer's `ack_wait`, set when it is created.
    fn claim(
        &self,
        handler: String,
        _limit: usize,
        _lease: Duration,
        _now: Millis,
    ) -> StoreFuture<Vec<Delivery>> {
        let inner = self.inner.clone();
        Box::pin(inner.claim(handler))
    }

    fn release(&self, deliveries: Vec<i64>, _now: Millis) -> StoreFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            for delivery in deliveries {
                inner.settle(delivery, AckKind::Nak(None)).await?;
            }
            Ok(())
        })
    }

    fn complete(&self, delivery: i64, _now: Millis) -> StoreFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.settle(delivery, AckKind::Ack).await.map(drop) })
    }

    fn retry_later(
        &self,
        delivery: i64,
        _cause: String,
        retry_at: Millis,
        now: Millis,
    ) -> StoreFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.retry_later(delivery, retry_at, now).await })
    }

    fn dead_letter(&self, delivery: i64, cause: String, now: Millis) -> StoreFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.dead_letter(delivery, cause, now).await })
    }

    fn open_count(&self, handler: String) -> StoreFuture<u64> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.connected()?;
            match inner.deliveries.consumer_info(token(&handler)).await {
                Ok(info) => Ok(info.num_pending + info.num_ack_pending as u64),
                Err(_) => Ok(0),
            }
        })
    }

    fn gauges(&self) -> StoreFuture<Vec<Gauge>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.gauges().await })
    }

    fn counts(&self) -> StoreFuture<Vec<Counts>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.counts().await })
    }

    fn dead_letters(&self, selector: Selector, limit: usize) -> StoreFuture<Vec<DeadLetter>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let found = inner.dead_matching(&selector).await?;
            Ok(found
                .into_iter()
                .take(limit)
                .map(|(_, d)| DeadLetter {
                    id: d.id,
                    handler: d.handler,
                    event_id: d.event_id,
                    event_type: d.event_type,
                    attempts: d.attempts,
                    cause: d.cause,
                    accepted_at: d.accepted_at,
                    dead_at: d.dead_at,
                })
                .collect())
        })
    }

    /// Puts each back at the end of its observer's queue (after what is waiting there now),
    /// as a new delivery with fresh attempts.
    fn retry_dead(&self, selector: Selector, _now: Millis) -> StoreFuture<u64> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut retried = 0;
            for (key, dead) in inner.dead_matching(&selector).await? {
                // The message id makes a second operator's retry of the same letter a no-op.
                inner
                    .publish_delivery(
                        &dead.handler,
                        &dead.event_id,
                        &dead.event_type,
                        &dead.key,
                        dead.accepted_at,
                        &dead.event,
                        Some(format!("retry.{}.{}", dead.id, dead.dead_at)),
                    )
                    .await?;
                inner
                    .dead
                    .purge(&key)
                    .await
                    .map_err(|e| fail("cannot remove the dead letter").of(e))?;
                retried += 1;
            }
            Ok(retried)
        })
    }

    fn discard_dead(&self, selector: Selector) -> StoreFuture<u64> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut discarded = 0;
            for (key, _) in inner.dead_matching(&selector).await? {
                inner
                    .dead
                    .purge(&key)
                    .await
                    .map_err(|e| fail("cannot discard the dead letter").of(e))?;
                discarded += 1;
            }
            Ok(discarded)
        })
    }

    /// Nothing to do: JetStream drops acknowledged deliveries at once, and history older than
    /// `retentionHours` by itself (`max_age`).
    fn prune(&self, _before: Millis) -> StoreFuture<u64> {
        Box::pin(async { Ok(0) })
    }

    fn record_outcomes(&self, seq: i64, outcomes: Vec<Outcome>) -> StoreFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some((key, _)) = inner.record_at(u64::try_from(seq).unwrap_or(0)).await else {
                return Ok(());
            };
            let appended = inner.append_outcomes(&key, outcomes).await;
            inner.changed.send_modify(|n| *n += 1);
            appended
        })
    }

    fn record_delivery_outcome(&self, delivery: i64, outcome: Outcome) -> StoreFuture<()> {
        let inner = self.inner.clone();
        let key = inner.lock_claimed().get(&delivery).map(|c| c.key.clone());
        Box::pin(async move {
            match key {
                Some(key) if !key.is_empty() => {
                    let appended = inner.append_outcomes(&key, vec![outcome]).await;
                    inner.changed.send_modify(|n| *n += 1);
                    appended
                }
                _ => Ok(()),
            }
        })
    }

    fn event(&self, id: String, source: Option<String>) -> StoreFuture<Option<EventRecord>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.event(id, source).await })
    }

    fn events(&self, filter: HistoryFilter, limit: usize) -> StoreFuture<Vec<EventRecord>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.events(filter, limit).await })
    }

    fn feed(&self, after: i64, filter: FeedFilter, limit: usize) -> StoreFuture<Feed> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.feed(after, filter, limit).await })
    }

    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_safe_in_subjects() {
        for name in ["webhook", "audit-log_2", "team.audit", "=x", ""] {
            let t = token(name);
            assert!(
                !t.is_empty() && !t.contains(['.', '*', '>', ' ']),
                "{name}: {t}"
            );
            assert_eq!(untoken(&t), name);
        }
        assert_eq!(token("webhook"), "webhook");
    }

    #[test]
    fn credentials_are_kept_out_of_addresses_and_debug_output() {
        assert_eq!(
            redacted("nats://alice:s3cret@10.0.0.1:4222, tls://n2:4222"),
            "nats://10.0.0.1:4222,tls://n2:4222"
        );
        let shown = format!("{:?}", Secret("s3cret".into()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn an_event_key_depends_on_source_and_id() {
        assert_eq!(event_key("a", "1"), event_key("a", "1"));
        assert_ne!(event_key("a", "1"), event_key("a1", ""));
        assert_eq!(event_key("a", "1").len(), 32);
    }
}
