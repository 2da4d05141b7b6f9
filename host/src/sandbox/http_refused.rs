//! The `wasi:http` a handler without `capabilities.allowedHosts` is linked with.
//!
//! Every component built with the SDK imports `wasi:http`, whether or not it ever sends, so the
//! interface must be there for it to load. But the real one keeps header sets, requests and
//! bodies in the host's resource table: an ungranted guest could make the host hold memory for
//! objects it can never send. This one holds nothing:
//! - building a request (`fields`, `outgoing-request`, `request-options` and their setters,
//!   `outgoing-request.body`) hands out placeholders that carry no data: what is set is
//!   dropped on the floor, since it can never be sent;
//! - `outgoing-handler.handle` answers `internal-error` with [`not_granted`]'s line, an error
//!   value the guest sees (the SDK's `send` returns it as an `Err`), and logs the refusal once
//!   per invocation;
//! - any other call (reading back a header, a body, a response) traps with the same line, which
//!   the host reports as the handler's failure;
//! - a guest may hold at most [`MAX_PLACEHOLDERS`] placeholders at once; the next one traps
//!   too, so a loop that keeps them cannot grow even the handle table.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};
use wasmtime_wasi_http::FieldMap;
use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types};
use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest,
    HostOutgoingResponse, HostResponseOutparam,
};
use wasmtime_wasi_http::p2::{HeaderError, HeaderResult, HttpError, HttpResult};

/// Placeholders an ungranted guest may hold at once: far more than a request needs (four), as
/// many as the resource table holds for a granted one.
pub const MAX_PLACEHOLDERS: u32 = super::state::MAX_RESOURCES as u32;

/// The one line an ungranted handler's HTTP call fails with.
pub fn not_granted(handler: &str) -> String {
    format!(
        "handler {handler} may not make HTTP requests: it has no capabilities.allowedHosts; \
         list the hosts it may call there, or pass --allow-host to hookwasm call"
    )
}

/// The trap an ungranted handler's HTTP call ends its invocation with; `status.rs` reports its
/// message alone.
#[derive(Debug, thiserror::Error)]
#[error("{}", not_granted(handler))]
pub struct NotGranted {
    handler: Arc<str>,
}

/// One invocation's side of the refusing interface: whose it is, how many placeholders the
/// guest holds, and whether the refusal was logged yet.
#[derive(Debug)]
pub struct HttpRefusal {
    handler: Arc<str>,
    held: u32,
    logged: bool,
}

impl HttpRefusal {
    /// The refusal state of one invocation of `handler`.
    pub fn new(handler: Arc<str>) -> HttpRefusal {
        HttpRefusal {
            handler,
            held: 0,
            logged: false,
        }
    }

    /// How many placeholders the guest holds now.
    #[cfg(test)]
    pub fn held(&self) -> u32 {
        self.held
    }

    fn trap(&self) -> wasmtime::Error {
        wasmtime::Error::new(NotGranted {
            handler: self.handler.clone(),
        })
    }

    fn refuse<T>(&self) -> wasmtime::Result<T> {
        Err(self.trap())
    }

    /// A new placeholder, or the trap once the guest holds [`MAX_PLACEHOLDERS`].
    fn placeholder<T: 'static>(&mut self) -> wasmtime::Result<Resource<T>> {
        if self.held >= MAX_PLACEHOLDERS {
            return self.refuse();
        }
        self.held += 1;
        // Nothing is stored under the rep: it only tells placeholders apart in a debugger.
        Ok(Resource::new_own(self.held))
    }

    /// A placeholder the guest gave back, by dropping it or handing it to a call that takes it.
    fn release<T: 'static>(&mut self, _placeholder: Resource<T>) {
        self.held = self.held.saturating_sub(1);
    }
}

/// Adds the refusing `wasi:http/types` and `wasi:http/outgoing-handler` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut HttpRefusal,
) -> wasmtime::Result<()> {
    outgoing_handler::add_to_linker::<T, HasSelf<HttpRefusal>>(linker, get)?;
    types::add_to_linker::<T, HasSelf<HttpRefusal>>(linker, &types::LinkOptions::default(), get)
}

impl outgoing_handler::Host for HttpRefusal {
    fn handle(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        options: Option<Resource<types::RequestOptions>>,
    ) -> HttpResult<Resource<HostFutureIncomingResponse>> {
        self.release(request);
        if let Some(options) = options {
            self.release(options);
        }
        let why = not_granted(&self.handler);
        if !self.logged {
            self.logged = true;
            tracing::warn!(handler = %self.handler, "outbound request refused: it has no capabilities.allowedHosts");
        }
        Err(HttpError::from(types::ErrorCode::InternalError(Some(why))))
    }
}

impl types::Host for HttpRefusal {
    fn convert_error_code(&mut self, err: HttpError) -> wasmtime::Result<types::ErrorCode> {
        err.downcast()
    }

    fn convert_header_error(&mut self, err: HeaderError) -> wasmtime::Result<types::HeaderError> {
        err.downcast()
    }

    /// No HTTP stream exists here, so no I/O error carries an HTTP error code.
    fn http_error_code(
        &mut self,
        _err: Resource<types::IoError>,
    ) -> wasmtime::Result<Option<types::ErrorCode>> {
        Ok(None)
    }
}

impl types::HostFields for HttpRefusal {
    fn new(&mut self) -> wasmtime::Result<Resource<FieldMap>> {
        self.placeholder()
    }

    fn from_list(&mut self, _entries: Vec<(String, Vec<u8>)>) -> HeaderResult<Resource<FieldMap>> {
        self.placeholder().map_err(HeaderError::trap)
    }

    fn drop(&mut self, fields: Resource<FieldMap>) -> wasmtime::Result<()> {
        self.release(fields);
        Ok(())
    }

    fn get(
        &mut self,
        _fields: Resource<FieldMap>,
        _name: String,
    ) -> wasmtime::Result<Vec<Vec<u8>>> {
        self.refuse()
    }

    fn has(&mut self, _fields: Resource<FieldMap>, _name: String) -> wasmtime::Result<bool> {
        self.refuse()
    }

    fn set(
        &mut self,
        _fields: Resource<FieldMap>,
        _name: String,
        _values: Vec<Vec<u8>>,
    ) -> HeaderResult<()> {
        Ok(())
    }

    fn delete(&mut self, _fields: Resource<FieldMap>, _name: String) -> HeaderResult<()> {
        Ok(())
    }

    fn append(
        &mut self,
        _fields: Resource<FieldMap>,
        _name: String,
        _value: Vec<u8>,
    ) -> HeaderResult<()> {
        Ok(())
    }

    fn entries(&mut self, _fields: Resource<FieldMap>) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        self.refuse()
    }

    fn clone(&mut self, _fields: Resource<FieldMap>) -> wasmtime::Result<Resource<FieldMap>> {
        self.placeholder()
    }
}

impl types::HostOutgoingRequest for HttpRefusal {
    fn new(
        &mut self,
        headers: Resource<FieldMap>,
    ) -> wasmtime::Result<Resource<HostOutgoingRequest>> {
        self.release(headers);
        self.placeholder()
    }

    fn body(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Result<Resource<HostOutgoingBody>, ()>> {
        self.placeholder().map(Ok)
    }

    fn drop(&mut self, request: Resource<HostOutgoingRequest>) -> wasmtime::Result<()> {
        self.release(request);
        Ok(())
    }

    fn method(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<types::Method> {
        self.refuse()
    }

    fn set_method(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
        _method: types::Method,
    ) -> wasmtime::Result<Result<(), ()>> {
        Ok(Ok(()))
    }

    fn path_with_query(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        self.refuse()
    }

    fn set_path_with_query(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
        _path_with_query: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        Ok(Ok(()))
    }

    fn scheme(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Option<types::Scheme>> {
        self.refuse()
    }

    fn set_scheme(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
        _scheme: Option<types::Scheme>,
    ) -> wasmtime::Result<Result<(), ()>> {
        Ok(Ok(()))
    }

    fn authority(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        self.refuse()
    }

    fn set_authority(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
        _authority: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        Ok(Ok(()))
    }

    fn headers(
        &mut self,
        _request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        self.refuse()
    }
}

impl types::HostRequestOptions for HttpRefusal {
    fn new(&mut self) -> wasmtime::Result<Resource<types::RequestOptions>> {
        self.placeholder()
    }

    fn connect_timeout(
        &mut self,
        _opts: Resource<types::RequestOptions>,
    ) -> wasmtime::Result<Option<types::Duration>> {
        self.refuse()
    }

    fn set_connect_timeout(
        &mut self,
        _opts: Resource<types::RequestOptions>,
        _duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        Ok(Ok(()))
    }

    fn first_byte_timeout(
        &mut self,
        _opts: Resource<types::RequestOptions>,
    ) -> wasmtime::Result<Option<types::Duration>> {
        self.refuse()
    }

    fn set_first_byte_timeout(
        &mut self,
        _opts: Resource<types::RequestOptions>,
        _duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        Ok(Ok(()))
    }

    fn between_bytes_timeout(
        &mut self,
        _opts: Resource<types::RequestOptions>,
    ) -> wasmtime::Result<Option<types::Duration>> {
        self.refuse()
    }

    fn set_between_bytes_timeout(
        &mut self,
        _opts: Resource<types::RequestOptions>,
        _duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        Ok(Ok(()))
    }

    fn drop(&mut self, opts: Resource<types::RequestOptions>) -> wasmtime::Result<()> {
        self.release(opts);
        Ok(())
    }
}

impl types::HostOutgoingBody for HttpRefusal {
    fn write(
        &mut self,
        _body: Resource<HostOutgoingBody>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        self.refuse()
    }

    fn finish(
        &mut self,
        _body: Resource<HostOutgoingBody>,
        _trailers: Option<Resource<types::Trailers>>,
    ) -> HttpResult<()> {
        Err(HttpError::trap(self.trap()))
    }

    fn drop(&mut self, body: Resource<HostOutgoingBody>) -> wasmtime::Result<()> {
        self.release(body);
        Ok(())
    }
}

// What follows can only be reached with a resource this interface never hands out (a response,
// an incoming body, a server's outparam): every call traps, and dropping one holds nothing.

impl types::HostIncomingRequest for HttpRefusal {
    fn method(&mut self, _id: Resource<HostIncomingRequest>) -> wasmtime::Result<types::Method> {
        self.refuse()
    }

    fn path_with_query(
        &mut self,
        _id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        self.refuse()
    }

    fn scheme(
        &mut self,
        _id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Option<types::Scheme>> {
        self.refuse()
    }

    fn authority(
        &mut self,
        _id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        self.refuse()
    }

    fn headers(
        &mut self,
        _id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        self.refuse()
    }

    fn consume(
        &mut self,
        _id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Result<Resource<HostIncomingBody>, ()>> {
        self.refuse()
    }

    fn drop(&mut self, _id: Resource<HostIncomingRequest>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponseOutparam for HttpRefusal {
    fn drop(&mut self, _id: Resource<HostResponseOutparam>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn set(
        &mut self,
        _id: Resource<HostResponseOutparam>,
        _response: Result<Resource<HostOutgoingResponse>, types::ErrorCode>,
    ) -> wasmtime::Result<()> {
        self.refuse()
    }

    fn send_informational(
        &mut self,
        _id: Resource<HostResponseOutparam>,
        _status: u16,
        _headers: Resource<FieldMap>,
    ) -> HttpResult<()> {
        Err(HttpError::trap(self.trap()))
    }
}

impl types::HostIncomingResponse for HttpRefusal {
    fn drop(&mut self, _response: Resource<HostIncomingResponse>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn status(
        &mut self,
        _response: Resource<HostIncomingResponse>,
    ) -> wasmtime::Result<types::StatusCode> {
        self.refuse()
    }

    fn headers(
        &mut self,
        _response: Resource<HostIncomingResponse>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        self.refuse()
    }

    fn consume(
        &mut self,
        _response: Resource<HostIncomingResponse>,
    ) -> wasmtime::Result<Result<Resource<HostIncomingBody>, ()>> {
        self.refuse()
    }
}

impl types::HostFutureTrailers for HttpRefusal {
    fn drop(&mut self, _id: Resource<HostFutureTrailers>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn subscribe(
        &mut self,
        _id: Resource<HostFutureTrailers>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.refuse()
    }

    fn get(
        &mut self,
        _id: Resource<HostFutureTrailers>,
    ) -> wasmtime::Result<
        Option<Result<Result<Option<Resource<types::Trailers>>, types::ErrorCode>, ()>>,
    > {
        self.refuse()
    }
}

impl types::HostIncomingBody for HttpRefusal {
    fn stream(
        &mut self,
        _id: Resource<HostIncomingBody>,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, ()>> {
        self.refuse()
    }

    fn finish(
        &mut self,
        _id: Resource<HostIncomingBody>,
    ) -> wasmtime::Result<Resource<HostFutureTrailers>> {
        self.refuse()
    }

    fn drop(&mut self, _id: Resource<HostIncomingBody>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostOutgoingResponse for HttpRefusal {
    fn new(
        &mut self,
        _headers: Resource<FieldMap>,
    ) -> wasmtime::Result<Resource<HostOutgoingResponse>> {
        self.refuse()
    }

    fn body(
        &mut self,
        _id: Resource<HostOutgoingResponse>,
    ) -> wasmtime::Result<Result<Resource<HostOutgoingBody>, ()>> {
        self.refuse()
    }

    fn status_code(
        &mut self,
        _id: Resource<HostOutgoingResponse>,
    ) -> wasmtime::Result<types::StatusCode> {
        self.refuse()
    }

    fn set_status_code(
        &mut self,
        _id: Resource<HostOutgoingResponse>,
        _status: types::StatusCode,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.refuse()
    }

    fn headers(
        &mut self,
        _id: Resource<HostOutgoingResponse>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        self.refuse()
    }

    fn drop(&mut self, _id: Resource<HostOutgoingResponse>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostFutureIncomingResponse for HttpRefusal {
    fn drop(&mut self, _id: Resource<HostFutureIncomingResponse>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn get(
        &mut self,
        _id: Resource<HostFutureIncomingResponse>,
    ) -> wasmtime::Result<
        Option<Result<Result<Resource<HostIncomingResponse>, types::ErrorCode>, ()>>,
    > {
        self.refuse()
    }

    fn subscribe(
        &mut self,
        _id: Resource<HostFutureIncomingResponse>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.refuse()
    }
}

#[cfg(test)]
mod tests {
    use types::HostFields as _;

    use super::*;

    #[test]
    fn a_request_is_built_from_placeholders_and_refused_with_the_grant_it_lacks() {
        let mut refusal = HttpRefusal::new("notify".into());
        let headers = types::HostFields::new(&mut refusal).expect("a placeholder");
        refusal
            .append(
                Resource::new_borrow(headers.rep()),
                "x-a".into(),
                vec![b'v'; 1 << 10],
            )
            .expect("accepted, and dropped on the floor");
        let request =
            types::HostOutgoingRequest::new(&mut refusal, headers).expect("a placeholder");
        let options = types::HostRequestOptions::new(&mut refusal).expect("a placeholder");
        assert_eq!(refusal.held(), 2, "the headers went into the request");
        let error = outgoing_handler::Host::handle(&mut refusal, request, Some(options))
            .expect_err("refused");
        match error.downcast().expect("an error value, not a trap") {
            types::ErrorCode::InternalError(Some(line)) => assert_eq!(
                line,
                "handler notify may not make HTTP requests: it has no capabilities.allowedHosts; \
                 list the hosts it may call there, or pass --allow-host to hookwasm call"
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(refusal.held(), 0, "handle took both");
    }

    #[test]
    fn reading_back_or_holding_too_many_traps_with_the_same_line() {
        let mut refusal = HttpRefusal::new("notify".into());
        let fields: Vec<Resource<FieldMap>> = (0..MAX_PLACEHOLDERS)
            .map(|_| types::HostFields::new(&mut refusal).expect("within the bound"))
            .collect();
        let trap = types::HostFields::new(&mut refusal).expect_err("one too many");
        let not_granted = trap.downcast_ref::<NotGranted>().expect("the refusal");
        assert!(
            not_granted
                .to_string()
                .starts_with("handler notify may not make HTTP requests")
        );
        let read = refusal.entries(Resource::new_borrow(fields[0].rep()));
        assert!(read.is_err_and(|e| e.downcast_ref::<NotGranted>().is_some()));
        // Dropping one makes room for the next.
        let first = fields.into_iter().next().expect("one");
        types::HostFields::drop(&mut refusal, first).expect("dropped");
        types::HostFields::new(&mut refusal).expect("room again");
    }
}
