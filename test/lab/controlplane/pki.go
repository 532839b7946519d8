package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// AdminUser is the user name of the admin token; it is in system:masters.
const AdminUser = "lab-admin"

// pki holds the paths of the files under Dir/pki. The CA, the
// service-account key and the admin token are created once and kept, so a
// restarted control plane accepts the kubeconfigs and tokens handed out
// before; the serving certificate is signed anew on every start so its
// SANs always follow the Config.
type pki struct {
	caCert, caKey         string
	servingCert, servKey  string
	serviceAccountKey     string
	tokenFile, adminToken string // adminToken is the value, not a path
}

func newPKI(dir string) *pki {
	return &pki{
		caCert:            filepath.Join(dir, "ca.crt"),
		caKey:             filepath.Join(dir, "ca.key"),
		servingCert:       filepath.Join(dir, "apiserver.crt"),
		servKey:           filepath.Join(dir, "apiserver.key"),
		serviceAccountKey: filepath.Join(dir, "sa.key"),
		tokenFile:         filepath.Join(dir, "tokens.csv"),
	}
}

// ensurePKI creates or loads everything under cfg.Dir/pki.
func ensurePKI(cfg Config, serviceIP net.IP) (*pki, error) {
	dir := filepath.Join(cfg.Dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := newPKI(dir)

	caCert, caKey, err := p.loadOrCreateCA()
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if err := p.writeServingCert(caCert, caKey, append(servingIPs(cfg.BindAddress, serviceIP), cfg.ExtraServingIPs...)); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	if _, err := os.Stat(p.serviceAccountKey); errors.Is(err, fs.ErrNotExist) {
		key, err := newKey()
		if err != nil {
			return nil, err
		}
		if err := writeKey(p.serviceAccountKey, key); err != nil {
			return nil, fmt.Errorf("service-account key: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	if err := p.ensureTokenFile(cfg.AdminToken); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	return p, nil
}

func servingIPs(bind, serviceIP net.IP) []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if !bind.IsUnspecified() && !bind.Equal(ips[0]) && !bind.Equal(ips[1]) {
		ips = append(ips, bind)
	}
	// The ClusterIP of the default/kubernetes Service, for in-cluster
	// clients that use KUBERNETES_SERVICE_HOST.
	return append(ips, serviceIP)
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func writeKey(path string, key crypto.Signer) error {
	pemBytes, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	return keyutil.WriteKey(path, pemBytes) // mode 0600
}

func (p *pki) loadOrCreateCA() (*x509.Certificate, crypto.Signer, error) {
	if _, err := os.Stat(p.caKey); err == nil {
		certs, err := cert.CertsFromFile(p.caCert)
		if err != nil {
			return nil, nil, err
		}
		key, err := keyutil.PrivateKeyFromFile(p.caKey)
		if err != nil {
			return nil, nil, err
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, nil, fmt.Errorf("%s: not a signing key", p.caKey)
		}
		return certs[0], signer, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}

	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	ca, err := cert.NewSelfSignedCACert(cert.Config{CommonName: "egressha-lab-ca"}, key)
	if err != nil {
		return nil, nil, err
	}
	if err := cert.WriteCert(p.caCert, encodeCert(ca)); err != nil {
		return nil, nil, err
	}
	if err := writeKey(p.caKey, key); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

func (p *pki) writeServingCert(ca *x509.Certificate, caKey crypto.Signer, ips []net.IP) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost",
			"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return err
	}
	serving, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	// The chain lets clients that only trust the CA verify the leaf.
	if err := cert.WriteCert(p.servingCert, append(encodeCert(serving), encodeCert(ca)...)); err != nil {
		return err
	}
	return writeKey(p.servKey, key)
}

func encodeCert(c *x509.Certificate) []byte {
	out, _ := cert.EncodeCertificates(c) // cannot fail for a parsed certificate
	return out
}

// ensureTokenFile writes the static token file (--token-auth-file) with the
// admin token: token, if given, else the one already in the file, else a new
// random one.
func (p *pki) ensureTokenFile(token string) error {
	if token == "" {
		if old, err := readAdminToken(p.tokenFile); err == nil {
			token = old
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if token == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		token = hex.EncodeToString(b)
	}
	if strings.ContainsAny(token, ",\"\n") {
		return fmt.Errorf("admin token must not contain commas, quotes or newlines")
	}
	p.adminToken = token
	// token,user,uid,"group1,group2"
	line := fmt.Sprintf("%s,%s,%s,%q\n", token, AdminUser, AdminUser, "system:masters")
	return os.WriteFile(p.tokenFile, []byte(line), 0o600)
}

func readAdminToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return rec[0], nil
}
