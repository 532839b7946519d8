package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// etcdStartTimeout bounds how long a single-member etcd may take to elect
// itself and serve; it normally takes well under a second.
const etcdStartTimeout = time.Minute

// startEtcd starts a single-member etcd with its data in dir, serving plain
// HTTP on 127.0.0.1 only (the API server is its only client). It returns
// once etcd serves, with the client URL.
func startEtcd(ctx context.Context, dir string, clientPort int, log *slog.Logger) (*embed.Etcd, string, error) {
	var err error
	if clientPort == 0 {
		if clientPort, err = freePort(); err != nil {
			return nil, "", err
		}
	}
	// A single member never talks to peers, but embed insists on a peer
	// listener.
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))}

	cfg := embed.NewConfig()
	cfg.Name = "lab"
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Only new data dirs use ClusterState; a restart with existing data in
	// cfg.Dir joins the member stored there.
	cfg.ClusterState = embed.ClusterStateFlagNew
	// A single member elects itself after up to one election timeout
	// (etcd fast-forwards all but the randomised last ticks); with the
	// default 100 ms/1 s that is up to a second of every start. It has no
	// peers to lose, so short timeouts cost nothing.
	cfg.TickMs, cfg.ElectionMs = 20, 200
	// The lab shares a few cores with builds; etcd's default of warning
	// about every apply slower than 100 ms would flood its log.
	cfg.ExperimentalWarningApplyDuration = time.Second
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapToSlog(log.Handler()))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("starting etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, clientURL.String(), nil
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, "", context.Cause(ctx)
	case <-time.After(etcdStartTimeout):
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after %s", etcdStartTimeout)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
