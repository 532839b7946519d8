package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	k8sClient "github.com/cilium/cilium/pkg/k8s/client"
	"github.com/cilium/cilium/pkg/option"

	"github.com/egressha/egressha/egressgw/config"
)

// LeaseName is the election's Lease, in Cilium's namespace. It does not
// start with heartbeat.LeasePrefix ("egressha-"), so no node's heartbeat
// Lease can be named like it.
const LeaseName = "egressha.operator"

// Cell runs the election on every operator replica and provides the
// Leadership it hands terms to. Place it on the operator's outer
// lifecycle, not Cilium's leader lifecycle.
var Cell = cell.Module(
	"egress-gateway-ha-leader",
	"egressha operator leader election with its own Lease and short timings",

	cell.Config(DefaultConfig),
	LeadershipCell,
	cell.Invoke(registerElection),
)

// Config holds the election's timings.
type Config struct {
	// EgressGatewayHALeaderLeaseDuration is how long the other replicas
	// wait, from the last renewal they observed, before taking the Lease
	// over: the takeover time after the leader dies is at most this plus
	// two retry periods.
	EgressGatewayHALeaderLeaseDuration time.Duration
	// EgressGatewayHALeaderRenewDeadline is how long the leader keeps
	// trying to renew before it gives the term up.
	EgressGatewayHALeaderRenewDeadline time.Duration
	// EgressGatewayHALeaderRetryPeriod is the interval between two
	// attempts to acquire or renew.
	EgressGatewayHALeaderRetryPeriod time.Duration
}

// DefaultConfig: a takeover within 2 s + 2 × 0.33 s (a follower's poll is
// jittered to at most 2.2 retry periods: it sees the last renewal up to
// one poll late and the expiry up to one poll late) ≈ 2.7 s of the
// leader's death. The renew deadline leaves the leader 2 − (1 + 0.15) =
// 0.85 s between giving its term up and the earliest moment another
// replica may take over.
var DefaultConfig = Config{
	EgressGatewayHALeaderLeaseDuration: 2 * time.Second,
	EgressGatewayHALeaderRenewDeadline: time.Second,
	EgressGatewayHALeaderRetryPeriod:   150 * time.Millisecond,
}

// Flags registers the election's flags.
func (def Config) Flags(flags *pflag.FlagSet) {
	flags.Duration("egress-gateway-ha-leader-lease-duration", def.EgressGatewayHALeaderLeaseDuration,
		"egressha operator leader election: how long the other replicas wait after the last renewal they observed before taking over")
	flags.Duration("egress-gateway-ha-leader-renew-deadline", def.EgressGatewayHALeaderRenewDeadline,
		"egressha operator leader election: how long the leader keeps trying to renew before it stops acting as leader")
	flags.Duration("egress-gateway-ha-leader-retry-period", def.EgressGatewayHALeaderRetryPeriod,
		"egressha operator leader election: interval between two attempts to acquire or renew the Lease")
}

// Validate applies client-go's rules (lease duration > renew deadline >
// leaderelection.JitterFactor × retry period > 0), and one more: the lease
// duration is a whole number of seconds. client-go writes it into the
// Lease as leaseDurationSeconds, truncated, and the other replicas wait
// that long, not the configured duration: 1.5 s would let them take over
// after 1 s, while the leader may still act, and less than 1 s at once.
func (c Config) Validate() error {
	switch {
	case c.EgressGatewayHALeaderLeaseDuration < time.Second || c.EgressGatewayHALeaderLeaseDuration%time.Second != 0:
		return fmt.Errorf("--egress-gateway-ha-leader-lease-duration must be a whole number of seconds (the Lease records seconds), got %s",
			c.EgressGatewayHALeaderLeaseDuration)
	case c.EgressGatewayHALeaderRetryPeriod <= 0:
		return fmt.Errorf("--egress-gateway-ha-leader-retry-period must be positive, got %s", c.EgressGatewayHALeaderRetryPeriod)
	case c.EgressGatewayHALeaderRenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(c.EgressGatewayHALeaderRetryPeriod)):
		return fmt.Errorf("--egress-gateway-ha-leader-renew-deadline (%s) must exceed %.1f × --egress-gateway-ha-leader-retry-period (%s)",
			c.EgressGatewayHALeaderRenewDeadline, leaderelection.JitterFactor, c.EgressGatewayHALeaderRetryPeriod)
	case c.EgressGatewayHALeaderLeaseDuration <= c.EgressGatewayHALeaderRenewDeadline:
		return fmt.Errorf("--egress-gateway-ha-leader-lease-duration (%s) must exceed --egress-gateway-ha-leader-renew-deadline (%s)",
			c.EgressGatewayHALeaderLeaseDuration, c.EgressGatewayHALeaderRenewDeadline)
	}
	return nil
}

type electionParams struct {
	cell.In

	Log          *slog.Logger
	Lifecycle    cell.Lifecycle
	Enabled      config.OperatorEnabled
	Config       Config
	Clientset    k8sClient.Clientset
	DaemonConfig *option.DaemonConfig
	Leadership   *Leadership
}

func registerElection(p electionParams) error {
	if !p.Enabled {
		return nil
	}
	if err := p.Config.Validate(); err != nil {
		return err
	}
	var e *Election
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			// Cilium's namespace is known once the daemon configuration
			// has been populated, before the start hooks run.
			e = &Election{
				Log: p.Log, Leadership: p.Leadership, Config: p.Config,
				Client: p.Clientset.CoordinationV1(), Namespace: p.DaemonConfig.CiliumNamespaceName(),
				Identity: Identity(),
			}
			return e.Start()
		},
		OnStop: func(ctx cell.HookContext) error { return e.Stop(ctx) },
	})
	return nil
}

// Identity is this replica's name in the election: the host name (a
// pod's is its name) and a random suffix, as Cilium's operator builds its
// own, so that a restarted replica never takes itself for its predecessor.
func Identity() string {
	name, _ := os.Hostname()
	return name + "-" + rand.String(10)
}

// Election runs client-go's leader election for Leadership, again and
// again: a replica that loses the Lease (it could not renew it within the
// renew deadline, e.g. cut from the API server) ends its term and stands
// again; it does not exit, as Cilium's operator does.
type Election struct {
	Log        *slog.Logger
	Leadership *Leadership
	Config     Config
	Client     coordinationv1client.LeasesGetter
	Namespace  string
	Identity   string

	lock   *resourcelock.LeaseLock
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// Start validates the configuration and starts campaigning.
func (e *Election) Start() error {
	if err := e.Config.Validate(); err != nil {
		return err
	}
	e.lock = &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: LeaseName},
		Client:     e.Client,
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
	}
	cfg := leaderelection.LeaderElectionConfig{
		Name:          LeaseName,
		Lock:          preciseLock{e.lock},
		LeaseDuration: e.Config.EgressGatewayHALeaderLeaseDuration,
		RenewDeadline: e.Config.EgressGatewayHALeaderRenewDeadline,
		RetryPeriod:   e.Config.EgressGatewayHALeaderRetryPeriod,
		// Not ReleaseOnCancel: client-go would release the Lease when
		// renewing fails too, before it ends the term (and with a timeout
		// of its own, up to the renew deadline): the term could outlive
		// the Lease. Stop ends the term first, then releases.
		ReleaseOnCancel: false,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { e.Leadership.Begin(ctx, e.Identity) },
			OnStoppedLeading: e.Leadership.End,
			OnNewLeader: func(identity string) {
				if identity != e.Identity {
					e.Log.Info("egressha leader observed", "leader", identity, "identity", e.Identity)
				}
			},
		},
	}
	if _, err := leaderelection.NewLeaderElector(cfg); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done.Add(1)
	go func() {
		defer e.done.Done()
		e.Log.Info("standing for egressha leader", "identity", e.Identity, "lease", e.Namespace+"/"+LeaseName,
			"leaseDuration", cfg.LeaseDuration, "renewDeadline", cfg.RenewDeadline, "retryPeriod", cfg.RetryPeriod)
		for ctx.Err() == nil {
			le, err := leaderelection.NewLeaderElector(cfg)
			if err != nil {
				e.Log.Error("egressha leader election", "error", err)
				return
			}
			le.Run(ctx) // returns when the term ends or ctx does
			if ctx.Err() == nil {
				e.Log.Warn("standing for egressha leader again", "identity", e.Identity)
			}
		}
	}()
	return nil
}

// Stop ends the term (waiting for the leader's work to stop), stops
// campaigning, and releases the Lease if this replica holds it, so that
// another replica takes over at once (a rolling restart hands over
// without waiting for the lease duration).
func (e *Election) Stop(ctx context.Context) error {
	if e == nil || e.cancel == nil {
		return nil
	}
	e.Leadership.Close()
	e.cancel()
	e.done.Wait()
	rctx, cancel := context.WithTimeout(ctx, e.Config.EgressGatewayHALeaderRenewDeadline)
	defer cancel()
	released, err := release(rctx, e.lock, e.Identity)
	if err != nil {
		e.Log.Warn("egressha leader Lease not released; another replica takes over when it expires", "error", err)
		return nil
	}
	if released {
		e.Log.Info("egressha leader Lease released", "identity", e.Identity)
	}
	return nil
}

// preciseLock is a LeaseLock whose Get tells every renewal apart.
// client-go's elector notices a renewal by comparing the bytes Get
// returns, the record's JSON, where the renew time has whole seconds: a
// follower sees at most one renewal per second, and its wait of the lease
// duration counts from the first renewal of the last second it saw, up to
// 1 s too early. With a 15 s lease that is noise; with 2 s the follower
// could take over 1 s after the leader's last renewal, while the leader
// may still act (it gives up only after the renew deadline). The renew
// time to the microsecond (as the Lease stores it) is appended to the
// bytes, so a follower's wait counts from the last renewal it saw.
type preciseLock struct{ *resourcelock.LeaseLock }

func (l preciseLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	rec, raw, err := l.LeaseLock.Get(ctx)
	if err != nil {
		return rec, raw, err
	}
	return rec, append(raw, rec.RenewTime.UTC().Format(time.RFC3339Nano)...), nil
}

// release empties the Lease's holder if identity holds it, as client-go's
// ReleaseOnCancel does; the update carries the resourceVersion just read,
// so it cannot overwrite another replica's renewal.
func release(ctx context.Context, lock *resourcelock.LeaseLock, identity string) (bool, error) {
	rec, _, err := lock.Get(ctx)
	if err != nil {
		return false, err
	}
	if rec.HolderIdentity != identity {
		return false, nil
	}
	now := metav1.NewTime(time.Now())
	err = lock.Update(ctx, resourcelock.LeaderElectionRecord{
		LeaderTransitions:    rec.LeaderTransitions,
		LeaseDurationSeconds: 1,
		RenewTime:            now,
		AcquireTime:          now,
	})
	if err != nil {
		return false, errors.Join(errors.New("releasing the Lease"), err)
	}
	return true, nil
}
