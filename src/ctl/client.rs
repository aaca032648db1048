//! `rtpmidid ctl`: one request to the running daemon, its answer printed as text or JSON.
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::proto::{Reply, Request, Who};
use crate::json::{self, Value};
use crate::options::{self, ConnectTarget, DEFAULT_CONTROL};
use crate::seq::SeqAddr;

/// How long `rtpmidid ctl` waits for the daemon's answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer line read: `peers` of many thousand sessions fits.
const MAX_ANSWER: u64 = 256 << 20;

#[derive(Clone, Debug, PartialEq)]
pub struct CtlOptions {
    pub control: PathBuf,
    /// Print the daemon's JSON answer instead of text.
    pub json: bool,
    pub request: Request,
    /// `top`: ask [`Request::Peers`] again every this long and show it as a live table.
    pub top: Option<Duration>,
}

/// `top`'s refresh interval unless `--interval` says otherwise.
const TOP_INTERVAL: Duration = Duration::from_secs(1);

const USAGE: &str = "Usage: rtpmidid ctl [--control PATH] [--json] COMMAND\n\n\
    Commands:\n  status\n  peers\n  top [--interval SECONDS]   (peers, live; q quits)\n  \
    connect HOST:PORT [NAME]   (also NAME@HOST:PORT)\n  \
    disconnect ID|NAME\n  export CLIENT:PORT\n  unexport CLIENT:PORT";

fn getopts() -> getopts::Options {
    let mut spec = getopts::Options::new();
    spec.optopt(
        "",
        "control",
        "control socket (default /run/rtpmidid/control.sock)",
        "PATH",
    );
    spec.optflag("", "json", "print the daemon's JSON answer");
    spec.optopt(
        "",
        "interval",
        "top: seconds between refreshes (default 1)",
        "SECONDS",
    );
    spec.optflag("h", "help", "print this help");
    spec
}

pub fn usage() -> String {
    getopts().usage(USAGE)
}

/// Parses the arguments after `ctl`.
pub fn parse(args: &[String]) -> Result<CtlOptions, String> {
    let m = getopts().parse(args).map_err(|e| e.to_string())?;
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    let port = |text: &str| {
        SeqAddr::parse(text).ok_or_else(|| format!("bad ALSA port {text:?}: use client:port"))
    };
    let top = words == ["top"];
    let request = match words.as_slice() {
        ["status"] => Request::Status,
        ["peers" | "top"] => Request::Peers,
        ["connect", target, rest @ ..] if rest.len() <= 1 => {
            let mut t =
                ConnectTarget::parse(target).map_err(|e| format!("bad target {target:?}: {e}"))?;
            if let Some(name) = rest.first() {
                t.name = Some(options::name(name).map_err(|e| format!("bad name {name:?}: {e}"))?);
            }
            Request::Connect(t)
        }
        ["disconnect", who] => Request::Disconnect(Who::parse(who)?),
        ["export", p] => Request::Export(port(p)?),
        ["unexport", p] => Request::Unexport(port(p)?),
        [] => return Err("ctl needs a command".into()),
        _ => return Err(format!("bad ctl command {:?}\n{USAGE}", words.join(" "))),
    };
    let interval = m
        .opt_str("interval")
        .map(|text| interval(&text))
        .transpose()?;
    if interval.is_some() && !top {
        return Err("--interval is for top".into());
    }
    if top && m.opt_present("json") {
        return Err("top shows a table; for JSON use peers --json".into());
    }
    Ok(CtlOptions {
        control: m
            .opt_str("control")
            .map_or_else(|| PathBuf::from(DEFAULT_CONTROL), PathBuf::from),
        json: m.opt_present("json"),
        request,
        top: top.then(|| interval.unwrap_or(TOP_INTERVAL)),
    })
}

/// Seconds, at least a tenth: faster would only load the daemon with `peers` requests.
fn interval(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && (0.1..=86_400.0).contains(s))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("bad --interval {text:?}: seconds from 0.1 to 86400"))
}

/// Sends one request and waits (with a deadline) for its answer.
pub fn exchange(path: &Path, request: &Request) -> Result<Value, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the daemon at {}: {e} (is rtpmidid running? see --control)",
            path.display()
        )
    })?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .and_then(|()| stream.write_all(format!("{}\n", request.to_json()).as_bytes()))
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .take(MAX_ANSWER)
        .read_line(&mut line)
        .map_err(|e| format!("no answer from the daemon: {e}"))?;
    json::parse(&line).map_err(|e| format!("the daemon's answer is not JSON ({e}): {line:?}"))
}

/// `rtpmidid ctl ...`: 0 on success, 1 when the daemon says no or cannot be reached.
pub fn run(options: &CtlOptions) -> ExitCode {
    if let Some(every) = options.top {
        return super::top::run(&options.control, every);
    }
    let printed = exchange(&options.control, &options.request).and_then(|answer| {
        if options.json {
            let ok = answer.get("ok").and_then(Value::as_bool) == Some(true);
            return Ok((format!("{answer}\n"), ok));
        }
        match Reply::from_json(&options.request, &answer) {
            Ok(Reply::Error(message)) => Err(message),
            Ok(reply) => Ok((reply.to_text(), true)),
            Err(e) => Err(format!(
                "the daemon's answer is not understood ({e}): {answer}"
            )),
        }
    });
    let (text, success) = printed.unwrap_or_else(|e| {
        eprintln!("rtpmidid ctl: {e}");
        (String::new(), false)
    });
    match io::stdout().lock().write_all(text.as_bytes()) {
        // A reader that stopped early (`ctl peers | head`) had what it wanted.
        Err(e) if e.kind() != ErrorKind::BrokenPipe => {
            eprintln!("rtpmidid ctl: cannot print the answer: {e}");
            ExitCode::FAILURE
        }
        _ if success => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::proto::PeerId;

    fn ctl(args: &str) -> Result<CtlOptions, String> {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn json(args: &str) -> String {
        ctl(args).unwrap().request.to_json().to_string()
    }

    #[test]
    fn ctl_arguments_become_requests() {
        let o = ctl("--control /tmp/x.sock --json status").unwrap();
        assert_eq!(o.control, PathBuf::from("/tmp/x.sock"));
        assert!(o.json);
        assert_eq!(o.request, Request::Status);
        assert_eq!(
            ctl("peers").unwrap().control,
            PathBuf::from(DEFAULT_CONTROL)
        );
        assert_eq!(
            json("connect 10.0.0.2:5006 Piano"),
            r#"{"cmd":"connect","host":"10.0.0.2","port":5006,"name":"Piano"}"#
        );
        assert_eq!(
            json("connect Piano@[::1]:5006"),
            r#"{"cmd":"connect","host":"::1","port":5006,"name":"Piano"}"#
        );
        assert_eq!(json("disconnect 3"), r#"{"cmd":"disconnect","id":"3"}"#);
        assert_eq!(
            ctl("disconnect 2.3").unwrap().request,
            Request::Disconnect(Who::Id(PeerId {
                listener: Some(2),
                session: 3
            }))
        );
        assert_eq!(
            json("disconnect Piano"),
            r#"{"cmd":"disconnect","name":"Piano"}"#
        );
        assert_eq!(json("export 20:0"), r#"{"cmd":"export","port":"20:0"}"#);
        assert_eq!(json("unexport 20:0"), r#"{"cmd":"unexport","port":"20:0"}"#);
        let top = ctl("top").unwrap();
        assert_eq!((top.request, top.top), (Request::Peers, Some(TOP_INTERVAL)));
        assert_eq!(ctl("peers").unwrap().top, None);
        assert_eq!(
            ctl("top --interval 0.25").unwrap().top,
            Some(Duration::from_millis(250))
        );
        for bad in [
            "top --interval 0",
            "top --interval 0.01",
            "top --interval x",
            "top --interval inf",
            "--interval 2 peers",
            "--json top",
            "top now",
            "",
            "frob",
            "connect",
            "connect host",
            "disconnect",
            "status x",
            "--bogus status",
            "export synth",
        ] {
            assert!(ctl(bad).is_err(), "{bad}");
        }
        // An empty name would match nothing; it is refused before it is sent.
        assert!(parse(&["disconnect".into(), String::new()]).is_err());
    }
}
