package connterm

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/egressha/egressha/egressgw/egresspolicy"
)

// FuzzTracker drives a Tracker with rows decoded from the input (each
// byte: which destinations the row has and their values, and whether this
// node has its own basic-mode address) and checks it against a plain
// model: a termination for exactly the destinations whose current value
// is real and whose last real value (since the destination appeared) had
// another SNAT source, with From/To those sources and Except the row's
// more specific destinations; and never one while every real value is the
// same VIP.
func FuzzTracker(f *testing.F) {
	f.Add([]byte{0x01, 0x02, 0x03})
	f.Add([]byte{0x11, 0x00, 0x21, 0x7f, 0xff})
	f.Add([]byte{0x45, 0x46, 0x45, 0x80, 0x46})
	dests := []netip.Prefix{all, ext, exclP}
	palette := []egresspolicy.Value{
		egresspolicy.DropValue, egresspolicy.ExcludedValue,
		val(ethA, gwA), val(ethB, gwB), val(vip, gwA), val(vip, gwB),
		val(none, gwA), val(ethOwn, gwA), val(ethOwn, gwB),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := NewTracker()
		model := map[netip.Prefix]SNATSource{}
		onlyVIP := true
		for _, b := range data {
			local := map[netip.Addr]bool{}
			if b&0x80 != 0 {
				local[ethOwn] = true
			}
			var row []egresspolicy.Target
			for i, d := range dests {
				if b&(1<<i) == 0 {
					continue
				}
				v := palette[(int(b>>3)+i*5)%len(palette)]
				row = append(row, egresspolicy.Target{Dest: d, Value: v, Policy: "p"})
			}
			slices.SortFunc(row, func(a, b egresspolicy.Target) int { return egresspolicy.ComparePrefix(a.Dest, b.Dest) })

			got := tr.Update(pod, row, local)

			var want []Termination
			next := map[netip.Prefix]SNATSource{}
			for _, tg := range row {
				old, had := model[tg.Dest]
				cur, real := SourceOf(tg.Value, local)
				if !real {
					if had {
						next[tg.Dest] = old
					}
					continue
				}
				if tg.EgressIP != vip {
					onlyVIP = false
				}
				next[tg.Dest] = cur
				if had && !old.Same(cur) {
					want = append(want, Termination{Source: pod, Dest: tg.Dest, Except: moreSpecific(row, tg.Dest),
						From: old, To: cur, Policy: "p"})
				}
			}
			model = next
			if len(got) != len(want) {
				t.Fatalf("row %v: got %+v, want %+v", row, got, want)
			}
			for i := range got {
				g, w := got[i], want[i]
				if g.Dest != w.Dest || g.From != w.From || g.To != w.To || !slices.Equal(g.Except, w.Except) {
					t.Fatalf("row %v: got %+v, want %+v", row, g, w)
				}
				for _, e := range g.Except {
					if e == g.Dest || !g.Dest.Contains(e.Addr()) || e.Bits() <= g.Dest.Bits() {
						t.Fatalf("except %s is not strictly inside %s", e, g.Dest)
					}
				}
			}
			if onlyVIP && len(got) > 0 {
				t.Fatalf("a VIP-only history terminated: %+v", got)
			}
		}
	})
}
