package version

import (
	"strings"
	"testing"

	ciliumversion "github.com/cilium/cilium/pkg/version"
)

func TestWantsVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"--version"}, true},
		{[]string{"--debug", "--version=true"}, true},
		{[]string{"--version=false"}, false},
		{[]string{"hive"}, false},
		{[]string{"--", "--version"}, false},
	} {
		if got := WantsVersion(tc.args); got != tc.want {
			t.Errorf("WantsVersion(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestLinesKeepCiliumFormat checks that our version does not disturb the
// line Cilium's tooling parses (version.FromString needs exactly its fields).
func TestLinesKeepCiliumFormat(t *testing.T) {
	Version, Commit = "v0.1.0", "abc123"
	lines := strings.Split(strings.TrimSpace(Lines("cilium-agent")), "\n")
	if len(lines) != 2 {
		t.Fatalf("want two lines, got %q", lines)
	}
	if lines[0] != "cilium-agent "+ciliumversion.Version {
		t.Errorf("first line %q is not Cilium's", lines[0])
	}
	if !strings.HasPrefix(lines[1], "egressha v0.1.0 (abc123) on cilium ") {
		t.Errorf("second line %q", lines[1])
	}
}
