package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// A system pod is one of Cilium's pods that the lab runs as a process, the
// way a kubelet runs its container: the cilium-agent of each node (the
// DaemonSet's pod) and the operator replicas (the Deployment's pods). Each
// has a Pod object, a ServiceAccount token bound to that Pod, the rendered
// cilium-config mounted where the container expects it, and a supervisor
// (in the lab daemon) that restarts the process with a kubelet's back-off
// when it exits on its own.
//
// Desired state lives in files, so the CLI, the tests and the daemon agree
// without talking: "<kind>.want" exists while the process should run
// (StartAgent creates it; StopAgent and Crash remove it, so a crashed node
// stays down until Recover), "<kind>.lock" serialises every start and stop,
// "<kind>.state" is the supervisor's record (restarts, last exit).
type sysPod struct {
	// Name is the Pod's name, Namespace its namespace.
	Name, Namespace string
	// Kind is "agent" or "operator": it names the state files.
	Kind string
	// Node is the node the pod is bound to ("" for operators, which the
	// lab runs on hosts of their own that have no Node object).
	Node string
	// Netns is the network namespace the process runs in, HostIP the
	// address of that host on the cluster network.
	Netns, HostIP string
	// ServiceAccount is the Pod's ServiceAccount.
	ServiceAccount string
	// dir holds the state files and the pod's volumes.
	dir string
}

func (p sysPod) file(suffix string) string { return filepath.Join(p.dir, p.Kind+suffix) }
func (p sysPod) pidFile() string           { return p.file(".pid") }
func (p sysPod) logFile() string           { return p.file(".log") }
func (p sysPod) wantFile() string          { return p.file(".want") }
func (p sysPod) stateFile() string         { return p.file(".state") }

// volumeDir is what pod-exec mounts into the container: serviceaccount/
// (token, ca.crt, namespace) and config-map/ (cilium-config, a file per key).
func (p sysPod) volumeDir() string { return filepath.Join(p.dir, "pod") }

func (p sysPod) wanted() bool {
	_, err := os.Stat(p.wantFile())
	return err == nil
}

func (p sysPod) pid() int      { return readPid(p.pidFile()) }
func (p sysPod) running() bool { return alive(p.pid()) }

// withLock runs f holding the pod's lock (an flock, so the CLI, the tests
// and the daemon's supervisor exclude each other across processes).
func (p sysPod) withLock(f func() error) error { return p.lock(syscall.LOCK_EX, f) }

// tryLock runs f if the lock is free and reports whether it ran.
func (p sysPod) tryLock(f func() error) bool {
	return p.lock(syscall.LOCK_EX|syscall.LOCK_NB, f) != errLocked
}

var errLocked = errors.New("locked")

func (p sysPod) lock(how int, f func() error) error {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	fd, err := syscall.Open(p.file(".lock"), syscall.O_CREAT|syscall.O_RDWR|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Flock(fd, how); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return errLocked
		}
		return err
	}
	defer syscall.Flock(fd, syscall.LOCK_UN) //nolint:errcheck
	return f()
}

// podState is the supervisor's record of a system pod, read by `status`.
type podState struct {
	Restarts  int       `json:"restarts"`
	LastExit  time.Time `json:"lastExit,omitzero"`
	Started   time.Time `json:"started,omitzero"`
	NextStart time.Time `json:"nextStart,omitzero"`
	Backoff   Duration  `json:"backoff"`
}

// Duration is a time.Duration that reads and writes as "1.5s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

func (p sysPod) state() podState {
	var st podState
	if data, err := os.ReadFile(p.stateFile()); err == nil {
		_ = json.Unmarshal(data, &st)
	}
	return st
}

func (p sysPod) saveState(st podState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := p.stateFile() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p.stateFile())
}

// startLocked starts the process if it does not run; the caller holds the
// lock. argv and env come from the pod's spec (see podCommand).
func (cfg Config) startLocked(p sysPod) error {
	if p.running() {
		return nil
	}
	argv, env, err := cfg.podCommand(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	if _, err := startDetached(p.pidFile(), p.logFile(), env, argv...); err != nil {
		return err
	}
	st := p.state()
	st.Started = time.Now()
	return p.saveState(st)
}

// startPod marks the pod wanted and starts its process now (no back-off:
// this is a planned start, as a new pod of a rollout).
func (cfg Config) startPod(p sysPod) error {
	return p.withLock(func() error {
		if err := os.WriteFile(p.wantFile(), nil, 0o644); err != nil {
			return err
		}
		return cfg.startLocked(p)
	})
}

// stopPod marks the pod not wanted and stops its process: SIGTERM with a
// grace period, or SIGKILL at once.
func stopPod(p sysPod, kill bool) {
	_ = p.withLock(func() error {
		if err := os.Remove(p.wantFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		sig := syscall.SIGTERM
		if kill {
			sig = syscall.SIGKILL
		}
		stopPid(p.pid(), sig, 20*time.Second)
		return nil
	})
}

// Kubelet's container restart back-off: the first restart is immediate,
// then 10 s doubling up to 5 min; a container that ran for 10 min starts
// over.
const (
	backoffInitial = 10 * time.Second
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
)

// nextBackoff is the delay before the restart after this one.
func nextBackoff(prev time.Duration) time.Duration {
	switch {
	case prev == 0:
		return backoffInitial
	case 2*prev > backoffMax:
		return backoffMax
	}
	return 2 * prev
}

// supervise restarts a wanted pod whose process exited, as a kubelet
// restarts a container (restartPolicy Always), and records it. It does not
// block on a pod's lock: a start or stop in progress elsewhere wins.
func (cfg Config) supervise(p sysPod, now time.Time, logf func(msg string, args ...any)) {
	if !p.wanted() {
		return
	}
	p.tryLock(func() error {
		if !p.wanted() {
			return nil
		}
		st := p.state()
		if p.running() {
			if !st.Started.IsZero() && now.Sub(st.Started) > backoffReset && st.Backoff != 0 {
				st.Backoff = 0
				return p.saveState(st)
			}
			return nil
		}
		if st.NextStart.IsZero() || st.LastExit.Before(st.Started) {
			// First sight of this exit: schedule the restart.
			st.LastExit = now
			st.NextStart = now.Add(time.Duration(st.Backoff))
			logf("container exited: restarting", "pod", p.Name, "in", time.Duration(st.Backoff), "log", p.logFile())
			if err := p.saveState(st); err != nil {
				return err
			}
		}
		if now.Before(st.NextStart) {
			return nil
		}
		argv, env, err := cfg.podCommand(p)
		if err != nil {
			logf("cannot restart", "pod", p.Name, "error", err)
			return err
		}
		if _, err := startDetached(p.pidFile(), p.logFile(), env, argv...); err != nil {
			logf("cannot restart", "pod", p.Name, "error", err)
			return err
		}
		st.Restarts++
		st.Started = time.Now()
		st.NextStart = time.Time{}
		st.Backoff = Duration(nextBackoff(time.Duration(st.Backoff)))
		return p.saveState(st)
	})
}

// restartsText is the RESTARTS column of `status`, as kubectl prints it.
func restartsText(st podState) string {
	if st.Restarts == 0 {
		return "0"
	}
	return strconv.Itoa(st.Restarts) + " (" + time.Since(st.LastExit).Round(time.Second).String() + " ago)"
}
