// Package client reads and writes egressha's custom resources. There is no
// generated clientset: a small generic client sits on a REST client in
// production and on client-go's testing.Fake (the object tracker behind
// Cilium's fake clientset, so `k8s/add` in script tests feeds it) in tests.
package client

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

// Scheme knows egressha's types and metav1's.
var Scheme = runtime.NewScheme()

func init() {
	if err := v1alpha1.AddToScheme(Scheme); err != nil {
		panic(err)
	}
}

// Clientset gives typed access to egressha's resources.
type Clientset struct {
	Gateways *Resource[*v1alpha1.EgressGateway]
	Policies *Resource[*v1alpha1.EgressGatewayPolicy]
}

func newClientset(b backend) *Clientset {
	return &Clientset{
		Gateways: &Resource[*v1alpha1.EgressGateway]{
			b:       b,
			gvr:     v1alpha1.SchemeGroupVersion.WithResource(v1alpha1.EgressGatewayResource),
			gvk:     v1alpha1.SchemeGroupVersion.WithKind("EgressGateway"),
			newObj:  func() *v1alpha1.EgressGateway { return &v1alpha1.EgressGateway{} },
			newList: func() runtime.Object { return &v1alpha1.EgressGatewayList{} },
		},
		Policies: &Resource[*v1alpha1.EgressGatewayPolicy]{
			b:       b,
			gvr:     v1alpha1.SchemeGroupVersion.WithResource(v1alpha1.EgressGatewayPolicyResource),
			gvk:     v1alpha1.SchemeGroupVersion.WithKind("EgressGatewayPolicy"),
			newObj:  func() *v1alpha1.EgressGatewayPolicy { return &v1alpha1.EgressGatewayPolicy{} },
			newList: func() runtime.Object { return &v1alpha1.EgressGatewayPolicyList{} },
		},
	}
}

// NewForConfig returns a Clientset talking to the API server of cfg.
func NewForConfig(cfg *rest.Config) (*Clientset, error) {
	rc, err := restClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return newClientset(restBackend{func() (rest.Interface, error) { return rc, nil }}), nil
}

// NewLazy returns a Clientset whose REST client is built on first use from
// the configuration config returns. Cilium's clientset knows its REST
// configuration only once it has started, after the hive is built.
func NewLazy(config func() *rest.Config) *Clientset {
	var once sync.Once
	var rc rest.Interface
	var err error
	return newClientset(restBackend{func() (rest.Interface, error) {
		once.Do(func() { rc, err = restClientFor(config()) })
		return rc, err
	}})
}

func restClientFor(cfg *rest.Config) (rest.Interface, error) {
	if cfg == nil || cfg.Host == "" {
		return nil, fmt.Errorf("no API server configured for %s", v1alpha1.SchemeGroupVersion)
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &v1alpha1.SchemeGroupVersion
	c.APIPath = "/apis"
	c.ContentType = runtime.ContentTypeJSON
	c.NegotiatedSerializer = serializer.NewCodecFactory(Scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("REST client for %s: %w", v1alpha1.SchemeGroupVersion, err)
	}
	return rc, nil
}

// NewForFake returns a Clientset served by a client-go testing.Fake, e.g.
// &fakeClientset.CiliumFakeClientset.Fake of Cilium's fake clientset.
//
// Object trackers file objects under the resource name guessed from the
// kind, which for EgressGateway is "egressgatewaies"; the fake client uses
// the same guess so objects added by `k8s/add` are found.
func NewForFake(f *k8stesting.Fake) *Clientset {
	cs := newClientset(fakeBackend{f})
	cs.Gateways.gvr, _ = meta.UnsafeGuessKindToResource(cs.Gateways.gvk)
	cs.Policies.gvr, _ = meta.UnsafeGuessKindToResource(cs.Policies.gvk)
	return cs
}

// Resource is one cluster-scoped resource type.
type Resource[T runtime.Object] struct {
	b       backend
	gvr     schema.GroupVersionResource
	gvk     schema.GroupVersionKind
	newObj  func() T
	newList func() runtime.Object
}

// List lists the objects.
func (r *Resource[T]) List(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	into := r.newList()
	return into, r.b.list(ctx, r.gvr, r.gvk, opts, into)
}

// Watch watches the objects.
func (r *Resource[T]) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return r.b.watch(ctx, r.gvr, opts)
}

// Get fetches one object.
func (r *Resource[T]) Get(ctx context.Context, name string) (T, error) {
	into := r.newObj()
	return into, r.b.get(ctx, r.gvr, name, into)
}

// UpdateStatus writes obj's status subresource; it fails with a Conflict
// when obj's resourceVersion is stale.
func (r *Resource[T]) UpdateStatus(ctx context.Context, obj T) (T, error) {
	into := r.newObj()
	return into, r.b.updateStatus(ctx, r.gvr, obj, into)
}

// ListerWatcher adapts the resource for reflectors.
func (r *Resource[T]) ListerWatcher() cache.ListerWatcher {
	return &cache.ListWatch{
		ListWithContextFunc:  r.List,
		WatchFuncWithContext: r.Watch,
	}
}

type backend interface {
	list(ctx context.Context, gvr schema.GroupVersionResource, gvk schema.GroupVersionKind, opts metav1.ListOptions, into runtime.Object) error
	watch(ctx context.Context, gvr schema.GroupVersionResource, opts metav1.ListOptions) (watch.Interface, error)
	get(ctx context.Context, gvr schema.GroupVersionResource, name string, into runtime.Object) error
	updateStatus(ctx context.Context, gvr schema.GroupVersionResource, obj runtime.Object, into runtime.Object) error
}

var parameterCodec = runtime.NewParameterCodec(Scheme)

type restBackend struct {
	client func() (rest.Interface, error)
}

func (b restBackend) list(ctx context.Context, gvr schema.GroupVersionResource, _ schema.GroupVersionKind, opts metav1.ListOptions, into runtime.Object) error {
	c, err := b.client()
	if err != nil {
		return err
	}
	return c.Get().Resource(gvr.Resource).VersionedParams(&opts, parameterCodec).Do(ctx).Into(into)
}

func (b restBackend) watch(ctx context.Context, gvr schema.GroupVersionResource, opts metav1.ListOptions) (watch.Interface, error) {
	c, err := b.client()
	if err != nil {
		return nil, err
	}
	opts.Watch = true
	return c.Get().Resource(gvr.Resource).VersionedParams(&opts, parameterCodec).Watch(ctx)
}

func (b restBackend) get(ctx context.Context, gvr schema.GroupVersionResource, name string, into runtime.Object) error {
	c, err := b.client()
	if err != nil {
		return err
	}
	return c.Get().Resource(gvr.Resource).Name(name).Do(ctx).Into(into)
}

func (b restBackend) updateStatus(ctx context.Context, gvr schema.GroupVersionResource, obj runtime.Object, into runtime.Object) error {
	c, err := b.client()
	if err != nil {
		return err
	}
	name, err := metaName(obj)
	if err != nil {
		return err
	}
	return c.Put().Resource(gvr.Resource).Name(name).SubResource("status").Body(obj).Do(ctx).Into(into)
}

func metaName(obj runtime.Object) (string, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return "", fmt.Errorf("%T has no object metadata", obj)
	}
	return m.GetName(), nil
}

type fakeBackend struct{ f *k8stesting.Fake }

func (b fakeBackend) list(_ context.Context, gvr schema.GroupVersionResource, gvk schema.GroupVersionKind, opts metav1.ListOptions, into runtime.Object) error {
	obj, err := b.f.Invokes(k8stesting.NewRootListActionWithOptions(gvr, gvk, opts), into)
	return copyInto(obj, err, into)
}

func (b fakeBackend) watch(_ context.Context, gvr schema.GroupVersionResource, opts metav1.ListOptions) (watch.Interface, error) {
	return b.f.InvokesWatch(k8stesting.NewRootWatchActionWithOptions(gvr, opts))
}

func (b fakeBackend) get(_ context.Context, gvr schema.GroupVersionResource, name string, into runtime.Object) error {
	obj, err := b.f.Invokes(k8stesting.NewRootGetAction(gvr, name), into)
	return copyInto(obj, err, into)
}

func (b fakeBackend) updateStatus(_ context.Context, gvr schema.GroupVersionResource, obj runtime.Object, into runtime.Object) error {
	res, err := b.f.Invokes(k8stesting.NewRootUpdateSubresourceAction(gvr, "status", obj), into)
	return copyInto(res, err, into)
}

// copyInto stores a tracker's result into the caller's object.
func copyInto(obj runtime.Object, err error, into runtime.Object) error {
	if err != nil {
		return err
	}
	if obj == nil {
		return fmt.Errorf("no object returned for %T", into)
	}
	if obj == into {
		return nil
	}
	src, dst := reflect.ValueOf(obj), reflect.ValueOf(into)
	if src.Type() != dst.Type() {
		return fmt.Errorf("tracker returned %T, want %T", obj, into)
	}
	dst.Elem().Set(src.Elem())
	return nil
}
