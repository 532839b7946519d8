// Package localgateways derives egress-local-gateways: this node's facts
// per EgressGateway (heartbeat.LocalFact: candidate or not, the basic-mode
// interface, this node's address on it, or why it cannot serve) from
// egress-gateways, the node's labels and Cilium's devices. It is the one
// place these facts are worked out; the heartbeat, the VIP controller,
// rp_filter and the entries controller read the table.
package localgateways

import (
	"context"
	"fmt"
	"strings"

	"github.com/cilium/hive/cell"
	"github.com/cilium/hive/job"
	"github.com/cilium/statedb"

	datapathtables "github.com/cilium/cilium/pkg/datapath/tables"

	"github.com/egressha/egressha/egressgw/config"
	"github.com/egressha/egressha/egressgw/heartbeat"
	"github.com/egressha/egressha/egressgw/reflectors"
	"github.com/egressha/egressha/egressgw/tables"
)

// Cell provides egress-local-gateways (statedb.Table) and the job that
// writes it, its only writer.
var Cell = cell.Module(
	"egress-gateway-ha-local-gws",
	"This nodes facts per EgressGateway",

	cell.ProvidePrivate(tables.NewLocalGatewaysTable),
	cell.Provide(statedb.RWTable[*tables.LocalGateway].ToTable),
	cell.Invoke(register),
)

type params struct {
	cell.In

	DB        *statedb.DB
	JobGroup  job.Group
	Enabled   config.Enabled
	Table     statedb.RWTable[*tables.LocalGateway]
	Gateways  statedb.Table[*tables.EgressGateway]
	Devices   statedb.Table[*datapathtables.Device]
	LocalNode *reflectors.LocalNodeLabels
}

// register registers the table's initializer (marked done by the first
// write, once the gateways, the devices and the node's labels are known;
// never when disabled) and the job.
func register(p params) {
	wtxn := p.DB.WriteTxn(p.Table)
	done := p.Table.RegisterInitializer(wtxn, "egressha-local-gateways")
	wtxn.Commit()
	if !p.Enabled {
		return
	}
	p.JobGroup.Add(job.OneShot("local-gateways", func(ctx context.Context, health cell.Health) error {
		return run(ctx, health, p, done)
	}))
}

func run(ctx context.Context, health cell.Health, p params, initDone func(statedb.WriteTxn)) error {
	health.OK("Waiting for the local node, devices and EgressGateways")
	for {
		txn := p.DB.ReadTxn()
		gwInit, gwWait := p.Gateways.Initialized(txn)
		devInit, devWait := p.Devices.Initialized(txn)
		_, seen, labelsChanged := p.LocalNode.Get()
		if gwInit && devInit && seen {
			break
		}
		// The channel of an initialized table is closed: wait only for
		// what is still missing, or this loop spins until it is there.
		if gwInit {
			gwWait = nil
		}
		if devInit {
			devWait = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-gwWait:
		case <-devWait:
		case <-labelsChanged:
		}
	}
	first := true
	for {
		txn := p.DB.ReadTxn()
		gws, gwChanged := p.Gateways.AllWatch(txn)
		devs, devChanged := p.Devices.AllWatch(txn)
		labels, _, labelsChanged := p.LocalNode.Get()
		facts := heartbeat.LocalFacts(labels, tables.Objects(statedb.Collect(gws)), reportDevices(statedb.Collect(devs)))
		write(p, facts, first, initDone)
		first = false

		var cands []string
		for _, f := range facts {
			if f.Candidate {
				cands = append(cands, f.Gateway)
			}
		}
		health.OK(fmt.Sprintf("%d gateways; candidate of %d: %s", len(facts), len(cands), strings.Join(cands, ", ")))

		select {
		case <-ctx.Done():
			return nil
		case <-gwChanged:
		case <-devChanged:
		case <-labelsChanged:
		}
	}
}

// write makes the table equal to facts, writing only the rows that differ.
func write(p params, facts []heartbeat.LocalFact, first bool, initDone func(statedb.WriteTxn)) {
	wtxn := p.DB.WriteTxn(p.Table)
	want := make(map[string]bool, len(facts))
	changed := first
	for _, f := range facts {
		want[f.Gateway] = true
		if old, _, ok := p.Table.Get(wtxn, tables.LocalGatewayNameIndex.Query(f.Gateway)); ok && old.LocalFact == f {
			continue
		}
		_, _, _ = p.Table.Insert(wtxn, &tables.LocalGateway{LocalFact: f})
		changed = true
	}
	for row := range p.Table.All(wtxn) {
		if !want[row.Gateway] {
			_, _, _ = p.Table.Delete(wtxn, row)
			changed = true
		}
	}
	if first {
		initDone(wtxn)
	}
	if changed {
		wtxn.Commit()
	} else {
		wtxn.Abort()
	}
}
