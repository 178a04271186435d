//! `lf ui`, the dashboard: its guard (token, `Host`, non-loopback refusal, files outside the store), its
//! runs (started, followed and cancelled through the API), and the page itself in a real browser:
//! headless Chromium driven through chromedriver (`fantoccini`), running the quickstart from the page.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Where they
//! are missing it says so and skips, except under CI (`CI` set), where that is a failure.
//! `LF_UI_SCREENSHOTS=DIR` saves its screenshots there (`docs/ui/` holds the committed ones).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};

use crate::common::Project;

/// A running `lf ui`.
struct Ui {
    child: Child,
    addr: String,
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lf ui --port 0 ARGS` in the project and waits for the address it prints.
fn start_ui(p: &Project, args: &[&str]) -> Ui {
    let mut argv = vec!["ui", "--port", "0", "--device", "cpu"];
    argv.extend(args);
    let mut child = p
        .command(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .next()
        .and_then(Result::ok)
        .expect("lf ui prints its address");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ui { child, addr }
}

/// One HTTP/1.1 request, written by hand so paths go out exactly as given (no client normalises `..`).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    if has_host {
        req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head.to_string(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn get_json(addr: &str, path: &str) -> Json {
    let (status, _, body) = http(addr, "GET", path, &[], "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn post_json(addr: &str, path: &str, body: &Json) -> (u16, Json) {
    let (status, _, text) = http(addr, "POST", path, &[], &body.to_string());
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `secs` saying `what`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const TWO_STEPS: &str = "name: p
steps:
  out:
    kind: command
    sandbox: false
    run: echo hello > \"$LF_OUT/hello.txt\"
  slow:
    kind: command
    sandbox: false
    run: sleep 60; echo done > \"$LF_OUT/done.txt\"
    inputs: {out: out}
";

#[test]
fn the_dashboard_serves_only_the_store_and_needs_its_token() {
    let p = Project::new();
    p.write("p.yaml", TWO_STEPS);
    // Beyond loopback without a token, nothing binds.
    let refused = p.lf(&["ui", "--host", "0.0.0.0", "--port", "0"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--token"), "{}", refused.stderr);
    let out = p.lf(&["run", "p.yaml", "--only", "out"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The run left its live record, finished, beside its run record.
    let live: Json = serde_json::from_str(&p.read("runs/p/live.json")).unwrap();
    let record: Json = serde_json::from_str(&p.read("runs/p/run.json")).unwrap();
    assert_eq!(
        (&live["finished"], &live["ok"]),
        (&json!(true), &json!(true)),
        "{live}"
    );
    assert_eq!(live["id"], record["id"]);
    assert_eq!(
        live["steps"],
        json!([{"name": "out", "kind": "command", "needs": [], "status": "ran",
        "reasons": ["new"], "artifact": record["steps"][0]["artifact"], "wall_s": record["steps"][0]["wall_s"]}])
    );

    let ui = start_ui(&p, &["--token", "s3cret"]);
    let a = ui.addr.as_str();
    let (status, _, body) = http(a, "GET", "/api/pipelines", &[], "");
    assert_eq!(status, 401, "{body}");
    let bearer = [("Authorization", "Bearer s3cret")];
    assert_eq!(
        http(
            a,
            "GET",
            "/api/pipelines",
            &[("Authorization", "Bearer nope")],
            ""
        )
        .0,
        401
    );
    assert_eq!(http(a, "GET", "/api/pipelines", &bearer, "").0, 200);
    // `?token=` once, then the cookie it sets.
    let (status, head, page) = http(a, "GET", "/?token=s3cret", &[], "");
    assert_eq!(status, 200);
    assert!(page.contains("lf board"), "{page}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_string();
    assert_eq!(
        http(a, "GET", "/api/jobs", &[("Cookie", &cookie)], "").0,
        200
    );
    // A page elsewhere reaching the loopback server through DNS rebinding.
    let (status, _, _) = http(
        a,
        "GET",
        "/api/pipelines",
        &[("Host", "evil.example:80"), bearer[0]],
        "",
    );
    assert_eq!(status, 403);

    // The run started in a terminal is in the dashboard's history.
    let (status, _, body) = http(a, "GET", "/api/history/p", &bearer, "");
    assert_eq!(status, 200, "{body}");
    let history: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(history["runs"][0]["id"], record["id"], "{history}");
    assert_eq!(history["runs"].as_array().unwrap().len(), 1);

    // Files: the artifact's, and nothing else.
    let (status, head, body) = http(a, "GET", "/files/p/out/hello.txt", &bearer, "");
    assert_eq!((status, body.as_str()), (200, "hello\n"), "{head}");
    std::fs::write(p.path().join("secret.txt"), "root:x:0:0").unwrap();
    for path in [
        "/files/p/out/../../../secret.txt",
        "/files/p/out/..%2f..%2f..%2fsecret.txt",
        "/files/p/out/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/files/p/out/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/files/p/..%2f..%2f/secret.txt",
        "/files/..%2f..%2f/out/secret.txt",
        "/files/p/out//etc/passwd",
        "/files/p/out/%2fetc%2fpasswd",
        "/files/p/slow/done.txt",
    ] {
        let (status, _, body) = http(a, "GET", path, &bearer, "");
        assert!(
            [400, 404].contains(&status) && !body.contains("root:"),
            "{path} answered {status}: {body}"
        );
    }
}

#[test]
fn runs_started_from_the_dashboard_are_followed_and_cancelled() {
    let p = Project::new();
    p.write("p.yaml", TWO_STEPS);
    let ui = start_ui(&p, &[]);
    let a = ui.addr.as_str();
    let listed = get_json(a, "/api/pipelines");
    let files: Vec<&str> = listed["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["file"].as_str().unwrap_or("(embedded)"))
        .collect();
    assert_eq!(files, ["(embedded)", "p.yaml"]);

    // The command shown is the command run.
    let req = json!({"file": "p.yaml", "vars": {"who": "a b"}, "only": ["slow"]});
    let (status, shown) = post_json(a, "/api/command", &req);
    assert_eq!(status, 200, "{shown}");
    let command = shown["command"].as_str().unwrap();
    assert!(
        command.starts_with("lf run p.yaml --var 'who=a b' --only slow --store "),
        "{command}"
    );
    for bad in [
        json!({"file": "../p.yaml"}),
        json!({"file": "p.yaml", "only": ["--store=/"]}),
        json!({"file": "p.yaml", "bogus": 1}),
    ] {
        assert_eq!(post_json(a, "/api/runs", &bad).0, 400, "{bad}");
    }
    let (status, plan) = post_json(a, "/api/plan", &json!({"file": "p.yaml"}));
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["plan"]["steps"][1]["needs"], json!(["out"]), "{plan}");

    let (status, job) = post_json(a, "/api/runs", &json!({"file": "p.yaml"}));
    assert_eq!(status, 201, "{job}");
    assert_eq!(
        post_json(a, "/api/runs", &json!({"file": "p.yaml"})).0,
        409,
        "one run of a pipeline at a time"
    );
    // `out` ran and `slow` is running, as live.json tells.
    let state = wait_for(60, "`slow` to run", || {
        let s = get_json(a, "/api/state/p");
        (s["live"]["steps"][1]["status"] == "running").then_some(s)
    });
    assert_eq!(state["live"]["steps"][0]["status"], "ran", "{state}");
    assert_eq!(state["alive"], true);
    let (status, cancelled) = post_json(a, &format!("/api/jobs/{}/cancel", job["id"]), &json!({}));
    assert_eq!(
        (status, &cancelled["cancelled"]),
        (200, &json!(true)),
        "{cancelled}"
    );
    let state = wait_for(30, "the run to be seen as ended", || {
        let s = get_json(a, "/api/state/p");
        (s["alive"] == false).then_some(s)
    });
    assert_eq!(
        state["live"]["finished"], false,
        "killed before it finished: {state}"
    );
    let jobs = get_json(a, "/api/jobs");
    assert_eq!(jobs["jobs"][0]["state"], "cancelled", "{jobs}");
    assert!(
        jobs["jobs"][0]["log"]
            .as_str()
            .unwrap()
            .contains("running slow"),
        "{jobs}"
    );
    // Nothing of the cancelled step was kept; the next run does it again.
    assert!(!p.path().join("runs/p/slow").exists());
}

/// chromedriver and Chromium, if installed.
fn browser() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let driver = which("chromedriver")?;
    let chromium = which("chromium").or_else(|| which("chromium-browser"))?;
    Some((driver, chromium))
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// chromedriver in a process group of its own, with the browsers it starts: all of them are
/// stopped when the test ends, passed or failed (a failed test never closes its session).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_attr(
    c: &Client,
    css: &str,
    attr: &str,
    secs: u64,
    mut ok: impl FnMut(&str) -> bool,
) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(Some(v)) = e.attr(attr).await
            && ok(&v)
        {
            return v;
        }
        if Instant::now() > end {
            let html = c.source().await.unwrap_or_default();
            let tail = &html[html.len().saturating_sub(3000)..];
            panic!("timed out after {secs}s waiting for `{css}` [{attr}]; page ends:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("LF_UI_SCREENSHOTS") {
        let png = c.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// The scenario in a real browser: start the quickstart from the page with a variable changed,
/// watch the step statuses change and the loss chart gain points, then chat with the trained model.
#[test]
fn the_quickstart_runs_from_the_page_and_its_model_answers_in_the_chat_panel() {
    let Some((driver, chromium)) = browser() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (see .ci/run)"
        );
        eprintln!(
            "skipped: chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let p = Project::new();
    let ui = start_ui(&p, &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(30, "chromedriver", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,1000"],
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("chromedriver starts a session");
        let result = scenario(&c, &ui.addr, &p).await;
        let _ = c.close().await;
        result
    });
}

async fn scenario(c: &Client, addr: &str, p: &Project) {
    c.goto(&format!("http://{addr}/")).await.unwrap();
    // A fresh store: the plan says every step will run.
    wait_attr(c, ".step[data-step=sft]", "data-status", 60, |s| {
        s == "pending"
    })
    .await;
    let name = c.find(Locator::Css("input[data-var=name]")).await.unwrap();
    name.clear().await.unwrap();
    name.send_keys("Nova").await.unwrap();
    let command = wait_for_text(c, "#command", 30, |t| t.contains("name=Nova")).await;
    assert!(command.starts_with("lf run --var name=Nova"), "{command}");
    screenshot(c, "run-form").await;

    click(c, Locator::Id("start")).await;
    wait_attr(c, "#job-state", "data-state", 30, |s| s == "running").await;
    // Statuses change as the run goes: pretraining runs, after steps that ran.
    wait_attr(c, ".step[data-step=pretrain]", "data-status", 300, |s| {
        s == "running"
    })
    .await;
    assert_eq!(statuses(c).await["tokenizer"], "ran");
    // The loss chart gains points while the step runs.
    click(c, Locator::Css(".tabs button[data-tab=curves]")).await;
    let first: usize = wait_attr(c, ".chart[data-step=pretrain]", "data-points", 300, |n| {
        n != "0"
    })
    .await
    .parse()
    .unwrap();
    let more: usize = wait_attr(c, ".chart[data-step=pretrain]", "data-points", 300, |n| {
        n.parse::<usize>().is_ok_and(|n| n > first)
    })
    .await
    .parse()
    .unwrap();
    assert!(more > first);
    wait_attr(c, ".step[data-step=sft]", "data-status", 600, |s| {
        s == "running"
    })
    .await;
    wait_attr(c, ".chart[data-step=sft]", "data-points", 300, |n| {
        n.parse::<usize>().is_ok_and(|n| n >= 3)
    })
    .await;
    screenshot(c, "curves").await;

    // The run ends; every step ran.
    click(c, Locator::Css(".tabs button[data-tab=run]")).await;
    wait_attr(c, "#run-badge", "data-status", 900, |s| {
        s == "finished" || s == "failed"
    })
    .await;
    let statuses = statuses(c).await;
    assert_eq!(statuses.len(), 15, "{statuses:?}");
    assert!(statuses.values().all(|s| s == "ran"), "{statuses:?}");
    wait_attr(c, "#job-state", "data-state", 30, |s| s == "succeeded").await;
    c.execute(
        "document.querySelector('.step[data-step=sft]').click()",
        Vec::new(),
    )
    .await
    .unwrap();
    screenshot(c, "run").await;

    // Evaluation side by side, the data as the model sees it, the export's files.
    click(c, Locator::Css(".tabs button[data-tab=eval]")).await;
    let header = wait_for_text(c, "table.eval", 30, |t| t.contains("dpo")).await;
    assert!(
        header.contains("pretrain") && header.contains("perplexity.perplexity"),
        "{header}"
    );
    screenshot(c, "evaluation").await;
    click(c, Locator::Css(".tabs button[data-tab=data]")).await;
    click(c, Locator::Css("#data-step option[value=identity-data]")).await;
    let sample = wait_for_text(c, "#preview-samples", 30, |t| t.contains("Nova")).await;
    assert!(!sample.is_empty());
    assert!(
        !c.find_all(Locator::Css("#preview-samples .masked"))
            .await
            .unwrap()
            .is_empty(),
        "the prompt is marked as not trained"
    );
    screenshot(c, "data").await;
    click(c, Locator::Css(".tabs button[data-tab=export]")).await;
    let link = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#exports a[href$='/Modelfile']"))
        .await
        .unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    let (status, _, body) = http(addr, "GET", &href, &[], "");
    assert_eq!(status, 200);
    assert_eq!(body, p.read("runs/quickstart/export/Modelfile"));

    // Chat with the DPO model: it learned the name given in the form.
    click(c, Locator::Css(".tabs button[data-tab=chat]")).await;
    click(c, Locator::Css("#chat-model option[value=dpo]")).await;
    click(c, Locator::Id("chat-load")).await;
    wait_attr(c, "#chat-status", "data-model", 120, |m| m == "dpo").await;
    type_into(c, Locator::Id("chat-input"), "Who are you?").await;
    click(c, Locator::Id("chat-send")).await;
    wait_attr(c, ".msg.assistant", "data-done", 120, |d| d == "true").await;
    let answer = c
        .find(Locator::Css(".msg.assistant"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(answer.contains("Nova"), "the model answered {answer:?}");
    screenshot(c, "chat").await;
    // The panel's settings reach the server: one out of range comes back as its error.
    let max = c.find(Locator::Id("chat-max-tokens")).await.unwrap();
    max.clear().await.unwrap();
    max.send_keys("0").await.unwrap();
    type_into(c, Locator::Id("chat-input"), "And you?").await;
    click(c, Locator::Id("chat-send")).await;
    let refused = wait_for_text(c, ".msg.assistant.error", 60, |t| !t.is_empty()).await;
    assert!(refused.contains("max_tokens"), "{refused}");
}

async fn click(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

async fn type_into(c: &Client, at: Locator<'_>, text: &str) {
    c.find(at).await.unwrap().send_keys(text).await.unwrap();
}

/// The status each step card shows, read in one go (the page redraws cards as the run goes).
async fn statuses(c: &Client) -> std::collections::BTreeMap<String, String> {
    let js = "return Object.fromEntries([...document.querySelectorAll('.step')].map(e => [e.dataset.step, e.dataset.status]))";
    serde_json::from_value(c.execute(js, Vec::new()).await.unwrap()).unwrap()
}

async fn wait_for_text(
    c: &Client,
    css: &str,
    secs: u64,
    mut ok: impl FnMut(&str) -> bool,
) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
            && ok(&t)
        {
            return t;
        }
        if Instant::now() > end {
            let html = c.source().await.unwrap_or_default();
            panic!("timed out after {secs}s waiting for the text of `{css}`; page:\n{html}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
