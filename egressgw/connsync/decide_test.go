package connsync

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReplayWindow(t *testing.T) {
	r := Replay{StaleAfter: 15 * time.Second}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		from       string
		epoch, seq uint64
		at         time.Duration
		want       bool
		why        string
	}{
		{"a", 10, 1, 0, true, "first"},
		{"a", 10, 1, 0, false, "same again"},
		{"a", 10, 3, 0, true, "ahead"},
		{"a", 10, 2, 0, true, "late but within the window"},
		{"a", 10, 2, 0, false, "late and seen"},
		{"b", 10, 2, 0, true, "another sender has its own window"},
		{"a", 10, 100, 0, true, "far ahead"},
		{"a", 10, 36, 0, false, "64 behind the top"},
		{"a", 10, 37, 0, true, "63 behind the top, unseen"},
		{"a", 10, 0, 0, false, "sequence 0 is never sent"},
		{"a", 20, 1, time.Second, true, "a restart: a later epoch"},
		{"a", 10, 101, 2 * time.Second, false, "the old epoch replayed after the restart"},
		{"a", 20, 2, 3 * time.Second, true, "the new epoch goes on"},
		{"a", 5, 1, 17 * time.Second, false, "an older epoch while the current one was heard 14 s ago"},
		{"a", 5, 1, 18 * time.Second, true, "an older epoch once the current one is silent for 15 s (clock set back)"},
		{"a", 20, 3, 19 * time.Second, true, "then the later epoch again (its datagrams are genuine)"},
	}
	for _, s := range steps {
		if got := r.Accept(s.from, s.epoch, s.seq, t0.Add(s.at)); got != s.want {
			t.Errorf("%s (%s epoch %d seq %d): accepted %v, want %v", s.why, s.from, s.epoch, s.seq, got, s.want)
		}
	}
}

func TestValidate(t *testing.T) {
	r := NATPortRange{Min: 32768, Max: 65535}
	for _, tc := range []struct {
		e    Entry
		want string
	}{
		{entry(5, 100, 40000, 443, 40000, ProtoTCP), ""},
		{entry(5, 100, 1234, 53, 65535, ProtoUDP), ""},
		{entry(5, 100, 40000, 443, 40000, 1), "protocol 1"},
		{entry(5, 100, 0, 443, 40000, ProtoTCP), "port 0"},
		{entry(5, 100, 40000, 0, 40000, ProtoTCP), "port 0"},
		{entry(5, 100, 40000, 443, 32767, ProtoTCP), "NAT port 32767 outside 32768..65535"},
		{Entry{Flow: Flow{Dst: [4]byte{1, 1, 1, 1}, PodPort: 1, DstPort: 1, Proto: ProtoTCP}, NATPort: 40000}, "0.0.0.0"},
	} {
		err := r.Validate(tc.e)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.e, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an ErrInvalid naming %q", tc.e, err, tc.want)
		}
	}
}

func TestChanges(t *testing.T) {
	a, b, c := entry(1, 1, 1000, 443, 40000, ProtoTCP), entry(2, 1, 1000, 443, 40001, ProtoTCP), entry(3, 1, 1000, 443, 40002, ProtoUDP)
	prev := map[Flow]uint16{a.Flow: a.NATPort, b.Flow: b.NATPort}
	b2 := b
	b2.NATPort = 50000
	cur := map[Flow]uint16{a.Flow: a.NATPort, b2.Flow: b2.NATPort, c.Flow: c.NATPort}
	got := Changes(prev, cur)
	slices.SortFunc(got, func(x, y Entry) int { return int(x.Pod[3]) - int(y.Pod[3]) })
	if want := []Entry{b2, c}; !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v (a unchanged, b with a new NAT port, c new; gone ones are not sent)", got, want)
	}
	if got := Changes(cur, cur); len(got) != 0 {
		t.Fatalf("nothing changed, got %v", got)
	}
}

func TestInstalledReportAndExpiry(t *testing.T) {
	var tr Installed
	t0 := time.Unix(1000, 0)
	a, b := entry(1, 1, 1000, 443, 40000, ProtoTCP), entry(2, 1, 1000, 443, 40001, ProtoTCP)

	plans := tr.Report([]Entry{a, b})
	if len(plans) != 2 || plans[0].Owned || plans[0].Stale != nil {
		t.Fatalf("first report: %+v, want two plans not owned", plans)
	}
	tr.Written(t0, a)
	tr.Written(t0, b)

	// b comes back with another NAT port: owned, and the old mapping is stale.
	b2 := b
	b2.NATPort = 50000
	plans = tr.Report([]Entry{b2})
	if len(plans) != 1 || !plans[0].Owned || plans[0].Stale == nil || *plans[0].Stale != b {
		t.Fatalf("changed port: %+v, want owned with stale %v", plans, b)
	}
	tr.Written(t0.Add(10*time.Second), b2)

	expiry := 15 * time.Second
	if got := tr.Expired(t0.Add(14*time.Second), expiry); len(got) != 0 {
		t.Fatalf("expired %v before the expiry", got)
	}
	got := tr.Expired(t0.Add(15*time.Second), expiry)
	if !slices.Equal(got, []Entry{a}) {
		t.Fatalf("expired %v, want only %v (b2 was reported 10 s later)", got, a)
	}
	if _, ok := tr.Lookup(a.Flow); ok || tr.Len() != 1 {
		t.Fatalf("an expired flow is still tracked (%d tracked)", tr.Len())
	}
	if got := tr.Expired(t0.Add(25*time.Second), expiry); !slices.Equal(got, []Entry{b2}) {
		t.Fatalf("expired %v, want %v", got, b2)
	}
}
