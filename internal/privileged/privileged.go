// Package privileged is the one rule for tests that need root (BPF maps,
// network namespaces): run as root they run; otherwise they fail, so CI
// (which runs as root) cannot pass without them, unless
// EGRESSHA_SKIP_PRIVILEGED=1 asks to skip them.
package privileged

import (
	"os"
	"testing"
)

// SkipEnv is the variable that lets a non-root run skip privileged tests.
const SkipEnv = "EGRESSHA_SKIP_PRIVILEGED"

// Require fails tb when not root, or skips it when SkipEnv is "1". needs
// says what the test does that needs root, e.g. "creates BPF maps".
func Require(tb testing.TB, needs string) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(SkipEnv) == "1" {
		tb.Skipf("%s=1: skipping a privileged test (it %s and needs root)", SkipEnv, needs)
	}
	tb.Fatalf("this test %s and needs root: run it as root, or set %s=1 to skip it", needs, SkipEnv)
}
