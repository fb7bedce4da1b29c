//! The admin API served over a real socket next to a running pipeline: the status page in headless
//! Chromium shows live numbers (screenshot in `target/test-artifacts/`), and schemathesis finds
//! no server error and no answer that breaks the OpenAPI document.
//!
//! Needs `chromium` and schemathesis (`scripts/services.sh install chromium schemathesis`);
//! their paths come from `CLICKPIPE_CHROMIUM` and `CLICKPIPE_SCHEMATHESIS` when set.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use actix_web::{App, HttpServer};
use clickpipe::service::admin::routes;
use common::*;

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "ui-test-token";

/// The admin API of `running` on a loopback port, in its own thread; stopped on drop.
struct AdminServer {
    url: String,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    fn start(running: &Running, cfg: clickpipe::service::config::Config) -> AdminServer {
        let state = admin_state(running, cfg);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (handle, thread) = serve_in_thread(move || {
            HttpServer::new(move || App::new().configure(routes(state.clone())))
                .workers(1)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run()
        });
        AdminServer {
            url,
            handle,
            thread: Some(thread),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || {
            actix_rt::System::new().block_on(handle.stop(false));
        })
        .join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pipeline on one partition that has processed `n` events, with its admin API.
fn pipeline_with_traffic(test: &str, n: usize) -> (Running, ModelServer, AdminServer) {
    let names = Names::new(test, 1);
    let model = ModelServer::start(0);
    let mut cfg = config(&names, &model.url);
    cfg.admin.token = Some(TOKEN.into());
    let running = run_pipeline(cfg.clone());
    let mut out = Collector::new(&names.output);
    produce(&names.input, &events("ui", n, 5));
    assert_eq!(out.event_ids(n, WAIT).len(), n, "{n} outputs");
    let admin = AdminServer::start(&running, cfg);
    (running, model, admin)
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn chromium() -> String {
    std::env::var("CLICKPIPE_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// The text inside the element with `id` in an HTML dump (no nested tags expected).
fn element_text(html: &str, id: &str) -> Option<String> {
    let start = html.find(&format!("id=\"{id}\""))?;
    let open = start + html[start..].find('>')? + 1;
    let close = open + html[open..].find('<')?;
    Some(html[open..close].trim().to_string())
}

#[test]
fn the_status_page_shows_live_numbers_in_headless_chromium() {
    let (running, model, admin) = pipeline_with_traffic("ui-page", 25);
    let base = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,1000",
        // Virtual time: the page's scripts and their fetches run before the dump.
        "--virtual-time-budget=5000",
    ];
    let page = format!("{}/", admin.url);
    let dump = Command::new(chromium())
        .args(base)
        .arg("--dump-dom")
        .arg(&page)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): scripts/services.sh install chromium",
                chromium()
            )
        });
    let html = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(
        dump.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let processed = element_text(&html, "processed").expect("processed counter");
    assert_eq!(
        processed.replace(',', ""),
        "25",
        "live processed count in {html}"
    );
    let ready = element_text(&html, "ready").expect("ready");
    assert_eq!(ready, "yes", "readiness shown");
    assert!(
        html.contains("[0]</td><td>running"),
        "partition row in {html}"
    );
    assert_eq!(
        element_text(&html, "error").as_deref(),
        Some(""),
        "the page reached the API"
    );

    let shot = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let status = Command::new(chromium())
        .args(base)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&page)
        .output()
        .expect("chromium screenshot");
    assert!(status.status.success());
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("status page screenshot: {}", shot.display());

    // The command-line clients read the same API.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_clickpipe"))
            .args(args)
            .args(["--url", &admin.url])
            .env_remove("CLICKPIPE_ADMIN_TOKEN")
            .output()
            .expect("clickpipe");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = cli(&["status"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("processed 25"), "{stdout}");
    assert!(stdout.contains("running"), "{stdout}");
    let (code, stdout, stderr) = cli(&["replay", "--dry-run", "--token", TOKEN]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!(report["dry_run"], true, "{report}");
    let (code, _, stderr) = cli(&["replay", "--dry-run", "--token", "wrong"]);
    assert_eq!(code, Some(2), "a refused replay fails the command");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "no secret in errors");

    drop(admin);
    running.stop();
    model.stop();
}

#[test]
fn the_admin_api_answers_as_its_openapi_document_says() {
    let (running, model, admin) = pipeline_with_traffic("ui-openapi", 5);
    let st = std::env::var("CLICKPIPE_SCHEMATHESIS").unwrap_or_else(|_| {
        let tools = std::env::var("CLICKPIPE_TOOLS").unwrap_or_else(|_| {
            format!(
                "{}/.cache/clickpipe",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        format!("{tools}/schemathesis/bin/st")
    });
    let report = artifacts().join("schemathesis.txt");
    let out = Command::new(&st)
        .args(["run", &format!("{}/openapi.json", admin.url)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--request-timeout",
            "20",
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {st} ({e}): scripts/services.sh install schemathesis"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(&report, &text);
    assert!(
        out.status.success(),
        "schemathesis found problems (report: {}):\n{text}",
        report.display()
    );
    drop(admin);
    running.stop();
    model.stop();
}
