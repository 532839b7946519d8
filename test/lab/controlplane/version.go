package controlplane

import (
	"fmt"
	_ "unsafe" // for go:linkname

	"k8s.io/component-base/version"
)

// KubeVersion is the Kubernetes release the control plane is built from
// (k8s.io/kubernetes in go.mod) and the gitVersion it reports on /version.
const KubeVersion = "v1.33.13"

// unbuiltGitVersion is what k8s.io/component-base/version reports when the
// binary was built without the release ldflags.
const unbuiltGitVersion = "v0.0.0-master+$Format:%H$"

// The version of a kube-apiserver comes from unexported variables that the
// Kubernetes release build sets with -ldflags -X. Built with plain `go build`
// the server says "v0.0.0-master+$Format:%H$", which kubectl and Cilium's
// version checks refuse. Rather than depend on every build (go build, go
// test, go run, gopls) passing the right -ldflags, the package sets the same
// variables at init, before anything has served a request. This is the
// runtime equivalent of LDFLAGS (kept in this directory for builds that want
// the values baked in anyway):
//
//	-X k8s.io/component-base/version.gitVersion=v1.33.13
//	-X k8s.io/component-base/version.gitMajor=1
//	-X k8s.io/component-base/version.gitMinor=33

//go:linkname gitVersion k8s.io/component-base/version.gitVersion
var gitVersion string

//go:linkname gitMajor k8s.io/component-base/version.gitMajor
var gitMajor string

//go:linkname gitMinor k8s.io/component-base/version.gitMinor
var gitMinor string

func init() {
	if err := setVersion(); err != nil {
		panic(err)
	}
}

// setVersion stamps KubeVersion unless the build already stamped a version
// with -ldflags, which then wins.
func setVersion() error {
	if gitVersion != unbuiltGitVersion {
		return nil
	}
	gitVersion, gitMajor, gitMinor = KubeVersion, "1", "33"
	// version.Get reads the git version from a copy taken in the package's
	// init; SetDynamicVersion refreshes that copy (and accepts the value
	// because it now equals gitVersion).
	if err := version.SetDynamicVersion(KubeVersion); err != nil {
		return fmt.Errorf("setting the kube-apiserver version: %w", err)
	}
	return nil
}
