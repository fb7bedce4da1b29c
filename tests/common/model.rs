//! The reference model server over loopback, on a thread of its own.

use super::*;

/// Runs the server `build` makes on its own thread and actix system; returns its handle (to stop
/// it) and the thread.
pub fn serve_in_thread<F>(build: F) -> (ServerHandle, JoinHandle<()>)
where
    F: FnOnce() -> actix_web::dev::Server + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = build();
            let _ = tx.send(server.handle());
            let _ = server.await;
        });
    });
    (rx.recv().expect("server handle"), thread)
}

/// A real model server on loopback, answering 500 to its first `fail_first` invocations (all of
/// them when `fail_first` is usize::MAX).
pub struct ModelServer {
    pub url: String,
    pub invocations: Arc<AtomicUsize>,
    /// `GET /ping` requests answered.
    pub pings: Arc<AtomicUsize>,
    /// Added to every invocation, in milliseconds (a slow model).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// While set, every invocation answers 500 (the model is down; `/ping` still answers).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
    /// While set, every invocation answers 400 (a non-retryable refusal; `/ping` still answers).
    pub rejecting: Arc<std::sync::atomic::AtomicBool>,
    /// The `traceparent` header of every invocation that had one.
    pub traceparents: Arc<std::sync::Mutex<Vec<String>>>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl ModelServer {
    pub fn start(fail_first: usize) -> ModelServer {
        Self::start_on(TcpListener::bind("127.0.0.1:0").expect("bind"), fail_first)
    }

    pub fn start_on(listener: TcpListener, fail_first: usize) -> ModelServer {
        let model = Arc::new(
            Model::load(std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/model.json"
            )))
            .expect("model"),
        );
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let invocations = Arc::new(AtomicUsize::new(0));
        let calls = invocations.clone();
        let pings = Arc::new(AtomicUsize::new(0));
        let pinged = pings.clone();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let down = failing.clone();
        let rejecting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = rejecting.clone();
        let traceparents = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = traceparents.clone();
        let (handle, thread) = serve_in_thread(move || {
            HttpServer::new(move || {
                let calls = calls.clone();
                let pinged = pinged.clone();
                let delay = delay.clone();
                let down = down.clone();
                let refuse = refuse.clone();
                let seen = seen.clone();
                App::new()
                    .wrap_fn(move |req, srv| {
                        if req.path() == "/ping" {
                            pinged.fetch_add(1, Ordering::SeqCst);
                        }
                        let wait = delay.load(Ordering::SeqCst);
                        let n = if req.path() == "/invocations" {
                            if let Some(tp) = req
                                .headers()
                                .get("traceparent")
                                .and_then(|v| v.to_str().ok())
                            {
                                seen.lock().expect("traceparents").push(tp.to_string());
                            }
                            calls.fetch_add(1, Ordering::SeqCst)
                        } else {
                            usize::MAX
                        };
                        let fail =
                            n != usize::MAX && (n < fail_first || down.load(Ordering::SeqCst));
                        let reject = n != usize::MAX && refuse.load(Ordering::SeqCst);
                        let fut = if fail || reject {
                            None
                        } else {
                            Some(srv.call(req))
                        };
                        async move {
                            if wait > 0 {
                                actix_rt::time::sleep(Duration::from_millis(wait)).await;
                            }
                            match fut {
                                Some(f) => f.await.map(|r| r.map_body(|_, b| b.boxed())),
                                None if reject => {
                                    Err(actix_web::error::ErrorBadRequest("injected refusal"))
                                }
                                None => Err(actix_web::error::ErrorInternalServerError(
                                    "injected failure",
                                )),
                            }
                        }
                    })
                    .configure(configure(model.clone()))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .expect("listen")
            .run()
        });
        ModelServer {
            url,
            invocations,
            pings,
            delay_ms,
            failing,
            rejecting,
            traceparents,
            handle,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let h = self.handle.clone();
        if let Some(t) = self.thread.take() {
            let rt = actix_rt::Runtime::new().expect("runtime");
            rt.block_on(h.stop(false));
            let _ = t.join();
        }
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
