package policymap

import (
	"net/netip"
	"sync"

	"github.com/egressha/egressha/egressgw/egresspolicy"
	"github.com/egressha/egressha/egressgw/policymap/mapstest"
)

func key(src, dst string) egresspolicy.Key {
	return egresspolicy.Key{Source: netip.MustParseAddr(src), Dest: netip.MustParsePrefix(dst)}
}

func val(egress, gw string) egresspolicy.Value {
	return egresspolicy.Value{EgressIP: netip.MustParseAddr(egress), GatewayIP: netip.MustParseAddr(gw)}
}

var (
	_ PolicyMap   = (*mapstest.Map)(nil)
	_ BatchWriter = (*mapstest.Map)(nil)
	_ BatchWriter = (*recordingMap)(nil)
)

// op is one call a recordingMap saw.
type op struct {
	Delete bool
	Key    egresspolicy.Key
	Value  egresspolicy.Value
}

// recordingMap passes every call to a PolicyMap and records the writes, so
// a test can prove that an entry was never deleted or rewritten.
type recordingMap struct {
	PolicyMap
	mu  sync.Mutex
	ops []op
}

func (r *recordingMap) Update(k egresspolicy.Key, v egresspolicy.Value) error {
	r.mu.Lock()
	r.ops = append(r.ops, op{Key: k, Value: v})
	r.mu.Unlock()
	return r.PolicyMap.Update(k, v)
}

// UpdateBatch records the batch as single writes and passes it on, in a
// batch when the map can.
func (r *recordingMap) UpdateBatch(keys []egresspolicy.Key, values []egresspolicy.Value) (int, error) {
	bw, ok := r.PolicyMap.(BatchWriter)
	if !ok {
		for i := range keys {
			if err := r.Update(keys[i], values[i]); err != nil {
				return i, err
			}
		}
		return len(keys), nil
	}
	n, err := bw.UpdateBatch(keys, values)
	r.mu.Lock()
	for i := range min(n+1, len(keys)) {
		r.ops = append(r.ops, op{Key: keys[i], Value: values[i]})
	}
	r.mu.Unlock()
	return n, err
}

func (r *recordingMap) Delete(k egresspolicy.Key) error {
	r.mu.Lock()
	r.ops = append(r.ops, op{Delete: true, Key: k})
	r.mu.Unlock()
	return r.PolicyMap.Delete(k)
}

func (r *recordingMap) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// writesTo returns the recorded writes of k.
func (r *recordingMap) writesTo(k egresspolicy.Key) []op {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []op
	for _, o := range r.ops {
		if o.Key == k {
			out = append(out, o)
		}
	}
	return out
}

// dump reads the whole map.
func dump(m PolicyMap) (map[egresspolicy.Key]egresspolicy.Value, error) {
	out := map[egresspolicy.Key]egresspolicy.Value{}
	err := m.IterateWithCallback(func(k egresspolicy.Key, v egresspolicy.Value) { out[k] = v })
	return out, err
}
