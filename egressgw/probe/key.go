package probe

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	// KeySecretName is the Secret, in Cilium's namespace, that holds the
	// probe key. The operator creates it when it is missing; agents may
	// read only this Secret (patches/rbac.yaml).
	KeySecretName = "egressha-probe-key"
	// KeySecretField is the data field of the key.
	KeySecretField = "key"
	// keyLen is the length of a key the operator generates.
	keyLen = 32
)

// Key is the current probe key; nil until the Secret was read. A key
// rotation (the Secret's data replaced) is taken at once by every reader;
// datagrams in flight under the old key are refused, which costs at most
// the detection time of probing (sessions go Down, then Up again), so
// rotate one replica and node at a time, or accept one blip.
type Key struct {
	v atomic.Pointer[[]byte]
}

// Get returns the key (nil: none yet).
func (k *Key) Get() []byte {
	if p := k.v.Load(); p != nil {
		return *p
	}
	return nil
}

// Set replaces the key; a key shorter than MinKeyLen clears it.
func (k *Key) Set(b []byte) {
	if len(b) < MinKeyLen {
		k.v.Store(nil)
		return
	}
	cp := append([]byte(nil), b...)
	k.v.Store(&cp)
}

// ensureKeySecret creates the key Secret with a random key unless it
// exists.
func ensureKeySecret(ctx context.Context, cs kubernetes.Interface, ns string) error {
	key := make([]byte, keyLen)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: KeySecretName, Namespace: ns,
			Labels: map[string]string{"app.kubernetes.io/part-of": "egressha"}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeySecretField: key},
	}
	_, err := cs.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// WatchKey keeps k equal to the probe key Secret in Cilium's namespace ns
// until ctx ends, without ever creating it: for an agent cell that
// authenticates as the probes do while the probe responder is off.
func WatchKey(ctx context.Context, log *slog.Logger, cs kubernetes.Interface, ns string, k *Key) {
	watchKey(ctx, log, cs, ns, false, k)
}

// watchKey keeps k equal to the Secret's key until ctx ends. With create
// (the operators) it creates the Secret when it is missing, retrying until
// it can. A Secret without a usable key clears k and is logged: probing
// then stops (every session falls back to the Lease), which is the safe
// side.
func watchKey(ctx context.Context, log *slog.Logger, cs kubernetes.Interface, ns string, create bool, k *Key) {
	ensure := func() {
		if !create {
			return
		}
		go func() {
			for ctx.Err() == nil {
				err := ensureKeySecret(ctx, cs, ns)
				if err == nil {
					return
				}
				log.Warn("Cannot create the liveness probe key Secret; retrying", "secret", ns+"/"+KeySecretName, "error", err)
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}()
	}
	ensure()
	lw := cache.NewListWatchFromClient(cs.CoreV1().RESTClient(), "secrets", ns,
		fields.OneTermEqualSelector("metadata.name", KeySecretName))
	take := func(o any) {
		s, ok := o.(*corev1.Secret)
		if !ok {
			return
		}
		b := s.Data[KeySecretField]
		if len(b) < MinKeyLen {
			log.Error("The liveness probe key Secret holds no usable key: probing is off until it is fixed",
				"secret", ns+"/"+KeySecretName, "field", KeySecretField, "bytes", len(b), "minimum", MinKeyLen)
		}
		before := k.Get()
		k.Set(b)
		if before != nil && string(before) != string(k.Get()) {
			log.Info("Liveness probe key changed", "secret", ns+"/"+KeySecretName)
		}
	}
	_, ctrl := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &corev1.Secret{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    take,
			UpdateFunc: func(_, o any) { take(o) },
			DeleteFunc: func(any) {
				log.Warn("The liveness probe key Secret was deleted: probing is off until it is back", "secret", ns+"/"+KeySecretName)
				k.Set(nil)
				ensure()
			},
		},
	})
	ctrl.Run(ctx.Done())
}

// errNoKey says why probing cannot run.
var errNoKey = fmt.Errorf("no probe key yet (Secret %s in Cilium's namespace, field %q)", KeySecretName, KeySecretField)
