//! The driver: carries out what the [`Session`] asks (open or close the
//! socket, send frames, wake it at its deadline) and hands its events to the
//! JS callback. One [`turn`] runs after every input.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use herald_protocol::CloseReason;
use herald_protocol::session::{Action, ConnectionState, Millis, Session, SessionEvent};
use wasm_bindgen::JsValue;

use crate::output;
use crate::page::{self, PageListeners};
use crate::socket::{Socket, SocketEvent};
use crate::timer::{self, Timer};

/// The driver, shared by the exported client and (weakly) by every closure.
pub(crate) type Shared = Rc<RefCell<Driver>>;

pub(crate) struct Driver {
    pub(crate) session: Session,
    /// The hub's WebSocket URLs; the session says which one to connect to.
    urls: Vec<String>,
    /// Offered on every socket (`herald.v1`, and the token's `bearer.<JWT>`).
    subprotocols: Vec<String>,
    /// `connect()` was called: until then the session's first `Connect` waits.
    started: bool,
    socket: Option<Socket>,
    /// The session's deadline and the timer set for it.
    deadline: Option<Millis>,
    timer: Option<Timer>,
    connect_timeout_ms: u64,
    connect_timer: Option<Timer>,
    page: Option<PageListeners>,
    /// `emit(kind, json)`.
    emit: js_sys::Function,
    /// A turn is handing events to JS; a nested turn (an application call
    /// from inside a handler) only does IO and leaves the events to it.
    emitting: bool,
}

impl Driver {
    /// The subprotocols the next sockets offer (a new token's).
    pub(crate) fn set_subprotocols(&mut self, subprotocols: Vec<String>) {
        self.subprotocols = subprotocols;
    }

    pub(crate) fn new(
        session: Session,
        urls: Vec<String>,
        subprotocols: Vec<String>,
        connect_timeout_ms: u64,
        emit: js_sys::Function,
    ) -> Driver {
        Driver {
            session,
            urls,
            subprotocols,
            started: false,
            socket: None,
            deadline: None,
            timer: None,
            connect_timeout_ms,
            connect_timer: None,
            page: None,
            emit,
            emitting: false,
        }
    }

    /// Starts driving: the session's pending `Connect` is carried out, and the
    /// page listeners are installed.
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    pub(crate) fn start(&mut self, shared: &Shared) {
        if self.started {
            return;
        }
        self.started = true;
        let weak = Rc::downgrade(shared);
        self.page = Some(PageListeners::install(move || wake(&weak)));
    }

    /// Stops everything this driver owns: socket, timers, listeners.
    pub(crate) fn dispose(&mut self) {
        self.session.disconnect();
        self.socket = None;
        self.timer = None;
        self.deadline = None;
        self.connect_timer = None;
        self.page = None;
        self.started = false;
    }

    /// Carries out the session's actions and frames and re-arms the timer.
    fn run_io(&mut self, shared: &Shared) {
        if !self.started {
            return;
        }
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect => self.open_socket(shared),
                Action::Close { code } => {
                    self.connect_timer = None;
                    if let Some(socket) = self.socket.take() {
                        socket.close(code.0);
                    }
                }
            }
        }
        if let Some(socket) = self.socket.as_ref().filter(|socket| socket.is_open()) {
            while let Some(frame) = self.session.poll_transmit() {
                // A refused send means the socket is closing: its close event follows.
                socket.send(&frame.encode());
            }
        }
        self.arm_timer(shared);
    }

    fn open_socket(&mut self, shared: &Shared) {
        self.socket = None;
        self.connect_timer = None;
        let weak = Rc::downgrade(shared);
        let url = self
            .urls
            .get(self.session.endpoint())
            .or(self.urls.first())
            .cloned()
            .unwrap_or_default();
        match Socket::open(&url, &self.subprotocols, move |event| {
            on_socket(&weak, event);
        }) {
            Ok(socket) => {
                self.socket = Some(socket);
                if self.connect_timeout_ms > 0 {
                    let weak = Rc::downgrade(shared);
                    self.connect_timer = Some(Timer::once(self.connect_timeout_ms, move || {
                        on_connect_timeout(&weak);
                    }));
                }
            }
            // A URL the browser refuses: the attempt failed, the session backs off.
            Err(_) => self.session.handle_closed(None, now()),
        }
    }

    fn arm_timer(&mut self, shared: &Shared) {
        let deadline = self.session.poll_timeout();
        if deadline == self.deadline && (deadline.is_none() || self.timer.is_some()) {
            return;
        }
        self.deadline = deadline;
        self.timer = deadline.map(|deadline| {
            let weak = Rc::downgrade(shared);
            Timer::once(deadline.since(now()), move || on_timer(&weak))
        });
    }
}

/// Now on the session's clock.
pub(crate) fn now() -> Millis {
    Millis(timer::now_ms())
}

/// Runs the session loop until it has nothing more to do, handing its events
/// to JS with no borrow held (a handler may call the client again).
pub(crate) fn turn(shared: &Shared) {
    loop {
        let (events, emit) = {
            let Ok(mut driver) = shared.try_borrow_mut() else {
                return;
            };
            driver.run_io(shared);
            if driver.emitting {
                return;
            }
            let events: Vec<SessionEvent> =
                std::iter::from_fn(|| driver.session.poll_event()).collect();
            if events.is_empty() {
                return;
            }
            driver.emitting = true;
            (events, driver.emit.clone())
        };
        for event in &events {
            let (kind, json) = output::encode(event);
            // A throwing handler must not stop the others; the wrapper reports it.
            let _ = emit.call2(
                &JsValue::NULL,
                &JsValue::from_str(kind),
                &JsValue::from_str(&json),
            );
        }
        shared.borrow_mut().emitting = false;
    }
}

/// Runs `f` on the driver if it still exists, then turns the loop.
fn with_driver(weak: &Weak<RefCell<Driver>>, f: impl FnOnce(&mut Driver)) {
    let Some(shared) = weak.upgrade() else { return };
    {
        let Ok(mut driver) = shared.try_borrow_mut() else {
            return;
        };
        f(&mut driver);
    }
    turn(&shared);
}

fn on_socket(weak: &Weak<RefCell<Driver>>, event: SocketEvent) {
    with_driver(weak, |driver| match event {
        SocketEvent::Open => {
            driver.connect_timer = None;
            if let Some(socket) = driver.socket.as_mut() {
                socket.mark_open();
            }
            driver.session.handle_connected(now());
        }
        SocketEvent::Text(text) => {
            // A frame that does not decode is skipped (it still counts as
            // liveness); the session stays consistent either way.
            let _ = driver.session.handle_text(&text, now());
        }
        SocketEvent::Closed { code } => {
            driver.connect_timer = None;
            driver.socket = None;
            // 1005 (no status) and 1006 (abnormal) carry no reason from the hub.
            let reason = (code != 1005 && code != 1006 && code != 0).then_some(CloseReason(code));
            driver.session.handle_closed(reason, now());
        }
    });
}

fn on_timer(weak: &Weak<RefCell<Driver>>) {
    with_driver(weak, |driver| {
        driver.timer = None;
        driver.deadline = None;
        driver.session.handle_timeout(now());
    });
}

fn on_connect_timeout(weak: &Weak<RefCell<Driver>>) {
    with_driver(weak, |driver| {
        driver.connect_timer = None;
        if driver
            .socket
            .as_ref()
            .is_some_and(|socket| !socket.is_open())
        {
            driver.socket = None;
            driver.session.handle_closed(None, now());
        }
    });
}

/// The network came back or the page became visible: skip the rest of the
/// backoff.
fn wake(weak: &Weak<RefCell<Driver>>) {
    with_driver(weak, |driver| {
        if matches!(driver.session.state(), ConnectionState::Reconnecting { .. }) && page::awake() {
            driver.session.reconnect();
        }
    });
}
