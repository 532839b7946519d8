package writer

import (
	"github.com/cilium/statedb"

	"github.com/egressha/egressha/egressgw/cegp"
	"github.com/egressha/egressha/egressgw/heartbeat"
)

// cegpReportPrefix prefixes, in the heartbeat report, the name of a
// CiliumEgressGatewayPolicy whose gateway entry this node may serve ("/"
// never occurs in an EgressGateway's name, so nothing collides). The
// operator does not read these entries: they only keep the node renewing,
// and show in egress-gateway-nodes why it does.
const cegpReportPrefix = "CiliumEgressGatewayPolicy/"

// addCEGPCandidacy adds to report one Ready entry per CiliumEgressGatewayPolicy
// with a gateway entry whose nodeSelector matches this node, so the node
// renews its heartbeat (without it, it would never be "heartbeat fresh" for
// the operator). It returns the watch channel of egress-cegps.
func (h *heartbeatJob) addCEGPCandidacy(txn statedb.ReadTxn, labels map[string]string, report heartbeat.Report) <-chan struct{} {
	if h.p.CEGPs == nil {
		return nil
	}
	rows, watch := h.p.CEGPs.AllWatch(txn)
	for row := range rows {
		if cegp.NodeSelectorsMatch(row.Entries, labels) {
			report[cegpReportPrefix+row.Name] = heartbeat.GatewayReport{Ready: true}
		}
	}
	return watch
}

// cegpsInitialized reports whether egress-cegps has its initial listing.
func (h *heartbeatJob) cegpsInitialized(txn statedb.ReadTxn) (bool, <-chan struct{}) {
	if h.p.CEGPs == nil {
		return true, nil
	}
	return h.p.CEGPs.Initialized(txn)
}
