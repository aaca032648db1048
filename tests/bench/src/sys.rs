//! Linux plumbing: the monotonic clock, epoll, UDP sockets, CPU pinning, child processes
//! that die with the harness, and the /proc figures the rows read.
use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CLOCK_MONOTONIC in nanoseconds: the clock of the stamps, shared by every thread.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `now_ns() >= at`, to the kernel's precision (see `precise_timers`).
pub fn sleep_until(at: u64) {
    let ts = libc::timespec {
        tv_sec: (at / 1_000_000_000) as libc::time_t,
        tv_nsec: (at % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid timespec; an interruption only ends the sleep early.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Timer slack down from 50 µs to 1 ns, so a paced sender keeps its period (inherited by the
/// threads started afterwards).
pub fn precise_timers() {
    // SAFETY: plain prctl.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

/// As many open files as the hard limit allows: 1000 sessions take 2000 sockets.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; the kernel fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread (and the threads and children it starts later) to `cpu`.
/// Async-signal-safe: also called between fork and exec.
pub fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, set with the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SCHED_FIFO at `priority` for the calling thread and what it starts later (threads and
/// children inherit it).
pub fn realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd` run under the normal scheduler whatever the harness runs under.
pub fn normal_priority(cmd: &mut Command) {
    // SAFETY: sched_setscheduler is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_OTHER, &param);
            Ok(())
        });
    }
}

/// A child process pinned to `cpu` (when given) that the kernel kills if the harness dies,
/// and that is killed by its PID when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `cmd`; its stdout is kept for `read_line`, stderr passes through.
    pub fn spawn(mut cmd: Command, cpu: Option<usize>) -> io::Result<Proc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        // SAFETY: prctl and sched_setaffinity are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                cpu.map_or(Ok(()), pin)
            });
        }
        Ok(Proc {
            child: cmd.spawn()?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line the child prints (the baselines print their port).
    pub fn read_line(&mut self) -> io::Result<String> {
        let out = self.child.stdout.as_mut().expect("piped");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        Ok(line.trim().to_string())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM (the daemon sends its BYs and exits), SIGKILL after a second.
        // SAFETY: signals this child by its PID; it is not yet reaped, so the PID is its own.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP socket on loopback, port chosen by the kernel, non-blocking.
pub fn udp() -> io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A free even port P with P+1 free too, for a control/data pair (found by binding both,
/// then released for the program that binds them next).
pub fn free_port_pair() -> io::Result<u16> {
    for _ in 0..100 {
        let a = UdpSocket::bind("127.0.0.1:0")?;
        let p = a.local_addr()?.port();
        if p % 2 == 0 && p < u16::MAX && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(io::Error::other("no free port pair"))
}

/// A receive buffer of `bytes`, beyond rmem_max when root (SO_RCVBUFFORCE).
pub fn set_recv_buffer(s: &UdpSocket, bytes: usize) {
    let v = bytes as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: an int option on our own socket.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An epoll instance; each fd is registered with a caller's token.
pub struct Poller {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
    }

    pub fn add(&self, fd: &impl AsRawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd and event.
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Tokens of the ready fds, waiting at most `timeout_ms` (-1: forever).
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<Vec<u64>> {
        // SAFETY: the buffer holds `len` events.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        Ok(self.events[..n as usize].iter().map(|e| e.u64).collect())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.fd) };
    }
}

fn read_proc(pid: u32, file: &str) -> io::Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
}

/// Seconds of CPU (user + system, every thread) the process used: /proc/PID/stat fields 14
/// and 15, in clock ticks.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = read_proc(pid, "stat")?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = &stat[stat
        .rfind(')')
        .ok_or_else(|| io::Error::other("bad stat"))?
        + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // SAFETY: plain sysconf.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[0] + f[1]) as f64 / hz)
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Voluntary plus involuntary context switches of every thread: how often it woke up.
pub fn context_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        total += status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0)
            + status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    }
    Ok(total)
}

/// Resident memory in kB (VmRSS).
pub fn rss_kb(pid: u32) -> io::Result<u64> {
    status_field(&read_proc(pid, "status")?, "VmRSS:").ok_or_else(|| io::Error::other("no VmRSS"))
}
