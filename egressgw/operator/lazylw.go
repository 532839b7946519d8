package operator

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/cilium/cilium/pkg/option"
)

type cacheLW = cache.ListerWatcher

// lazyNamespace builds a namespaced ListerWatcher on first use: Cilium's
// namespace is only known once the daemon configuration is populated,
// after the hive is constructed.
func lazyNamespace(dc *option.DaemonConfig, build func(ns string) cacheLW) cacheLW {
	var once sync.Once
	var lw cacheLW
	get := func() cacheLW {
		once.Do(func() { lw = build(dc.CiliumNamespaceName()) })
		return lw
	}
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cache.ToListerWithContext(get()).ListWithContext(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cache.ToWatcherWithContext(get()).WatchWithContext(ctx, o)
		},
	}
}
