// Package version carries egressha's own version, set at link time, and
// adds it to the --version output of the Cilium commands we build.
package version

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	ciliumversion "github.com/cilium/cilium/pkg/version"
)

// Set with -ldflags "-X github.com/egressha/egressha/internal/version.Version=...".
var (
	// Version is egressha's release or `git describe` output.
	Version = "dev"
	// Commit is the git commit the binary was built from.
	Commit = ""
)

// CiliumModuleVersion is the version of the github.com/cilium/cilium module
// linked into this binary, read from the build info so it cannot disagree
// with what was actually compiled in.
func CiliumModuleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range bi.Deps {
			if dep.Path == "github.com/cilium/cilium" {
				if dep.Replace != nil {
					return dep.Replace.Version
				}
				return dep.Version
			}
		}
	}
	return "unknown"
}

// String is the one-line egressha version.
func String() string {
	s := "egressha " + Version
	if Commit != "" {
		s += " (" + Commit + ")"
	}
	return s + " on cilium " + CiliumModuleVersion()
}

// WantsVersion reports whether the command line asks for --version.
func WantsVersion(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "--version=true":
			return true
		}
	}
	return false
}

// Lines is the --version output: Cilium's version line, in the format
// Cilium's tooling parses, then ours.
func Lines(program string) string {
	return fmt.Sprintf("%s %s\n%s\n", program, ciliumversion.Version, String())
}

// HandleVersionFlag prints Lines and exits when args ask for --version.
// It must run before cmd.Execute: Cilium answers --version from a cobra
// initializer that prints only its own line and exits.
func HandleVersionFlag(cmd *cobra.Command, args []string) {
	if WantsVersion(args) {
		fmt.Print(Lines(cmd.Name()))
		os.Exit(0)
	}
}
