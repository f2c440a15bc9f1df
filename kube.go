//go:build !hookonly

package main

// Namespace lookups: a namespace can opt its pods in (or out) with a label,
// and pick their CA bundle. NRI gives the plugin a pod's namespace name
// only, so the plugin asks the API server, with net/http alone: the
// in-cluster address, the service account's CA, and its projected token,
// re-read from disk for every request because the kubelet rotates it.
// Answers are cached briefly; when the API server cannot be reached, the
// last answer is used while it is not too old. The same client posts the
// pod events (events.go).

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	// namespaceTTL is how long an answer is used before asking again, and
	// namespaceStale how long it is used when asking fails.
	namespaceTTL   = 30 * time.Second
	namespaceStale = 10 * time.Minute
	// namespaceTimeout keeps a lookup well inside NRI's request timeout.
	namespaceTimeout = 1 * time.Second
	// namespaceRetry is how long a failed lookup is not tried again: while
	// the API server is down, container starts must not each wait for it.
	namespaceRetry = 5 * time.Second
	maxAPIResponse = 1 << 20
	maxTokenSize   = 64 << 10
)

// Namespace lookup results, as cainjekt_namespace_lookups_total labels them.
const (
	lookupOK     = "ok"     // asked the API server
	lookupCached = "cached" // answered from the cache
	lookupStale  = "stale"  // the API server failed; an older answer was used
	lookupError  = "error"  // the API server failed and there was no answer to use
)

var lookupResults = []string{lookupOK, lookupCached, lookupStale, lookupError}

// namespaceInfo is what cainjekt reads of a namespace.
type namespaceInfo struct {
	labels, annotations map[string]string
}

// metadata returns a label of the namespace, else an annotation.
func (n *namespaceInfo) metadata(key string) (string, bool) {
	if v, ok := n.labels[key]; ok {
		return v, true
	}
	v, ok := n.annotations[key]
	return v, ok
}

// kubeClient reads namespaces from the API server.
type kubeClient struct {
	api       *url.URL // https://host:port
	tokenFile string
	tls       *tls.Config
	log       *slog.Logger
	metrics   *metrics

	mu    sync.Mutex
	cache map[string]namespaceEntry
	now   func() time.Time
}

type namespaceEntry struct {
	info    *namespaceInfo // the last answer, nil if none
	fetched time.Time
	err     error // the last lookup's failure, until failed+namespaceRetry
	failed  time.Time
}

// newKubeClient returns a client of the API server at api, trusting the CA
// in caFile. An empty api disables namespace lookups: it returns nil.
func newKubeClient(api, caFile, tokenFile string, log *slog.Logger, m *metrics) (*kubeClient, error) {
	if api == "" {
		return nil, nil
	}
	ca, err := readHostFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("API server CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("API server CA %s holds no certificate", caFile)
	}
	u, err := url.Parse(strings.TrimSuffix(api, "/"))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("API server %q is not an https:// URL", api)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "443")
	}
	return &kubeClient{
		api:       u,
		tokenFile: tokenFile,
		tls:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ServerName: u.Hostname()},
		log:       log,
		metrics:   m,
		cache:     map[string]namespaceEntry{},
		now:       time.Now,
	}, nil
}

// namespace returns a namespace's labels and annotations.
func (k *kubeClient) namespace(ctx context.Context, name string) (*namespaceInfo, error) {
	if !dnsLabel(name) {
		return nil, fmt.Errorf("namespace name %q is not a DNS label", name)
	}
	k.mu.Lock()
	entry := k.cache[name]
	k.mu.Unlock()
	now := k.now()
	switch {
	case entry.info != nil && now.Sub(entry.fetched) < namespaceTTL:
		k.metrics.namespaceLookups.inc(lookupCached)
		return entry.info, nil
	case entry.err != nil && now.Sub(entry.failed) < namespaceRetry:
		return k.failed(entry, now) // logged when it failed
	}
	info, err := k.fetch(ctx, name)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		k.cache[name] = namespaceEntry{info: info, fetched: now}
		k.metrics.namespaceLookups.inc(lookupOK)
		return info, nil
	}
	entry.err, entry.failed = err, now
	k.cache[name] = entry
	if entry.usable(now) {
		k.log.Warn("namespace lookup failed; using an older answer", "namespace", name, "error", err, "age", now.Sub(entry.fetched).Round(time.Second).String())
	} else {
		k.log.Error("namespace lookup failed", "namespace", name, "error", err)
	}
	return k.failed(entry, now)
}

// usable says whether an older answer may stand in for a failed lookup.
func (e namespaceEntry) usable(now time.Time) bool {
	return e.info != nil && now.Sub(e.fetched) < namespaceStale
}

// failed answers for a namespace whose last lookup failed: with the older
// answer while it is usable, else with the failure.
func (k *kubeClient) failed(entry namespaceEntry, now time.Time) (*namespaceInfo, error) {
	if entry.usable(now) {
		k.metrics.namespaceLookups.inc(lookupStale)
		return entry.info, nil
	}
	k.metrics.namespaceLookups.inc(lookupError)
	return nil, entry.err
}

// fetch asks the API server for one namespace.
func (k *kubeClient) fetch(ctx context.Context, name string) (*namespaceInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, namespaceTimeout)
	defer cancel()
	resp, body, err := k.call(ctx, http.MethodGet, "/api/v1/namespaces/"+name, nil)
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("get namespace %s: 401 Unauthorized: the service account token was refused", name)
	case http.StatusForbidden:
		return nil, fmt.Errorf("get namespace %s: 403 Forbidden: the ClusterRole must allow get on namespaces", name)
	default:
		return nil, fmt.Errorf("get namespace %s: %s", name, resp.Status)
	}
	info, err := parseNamespace(body)
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return info, nil
}

// call makes one request of the API server, with the service account's
// token as it is on disk now, over a connection of its own, and returns
// the response with its body, at most maxAPIResponse bytes. The standard
// library writes the request and parses the response; requests are rare
// (lookups cached, events rate-limited) enough that a TLS handshake each
// costs nothing that matters, and net/http's client would add a megabyte
// to the plugin.
func (k *kubeClient) call(ctx context.Context, method, path string, body []byte) (*http.Response, []byte, error) {
	token, err := readHostFile(k.tokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("service account token: %w", err)
	}
	if len(token) > maxTokenSize {
		return nil, nil, errors.New("service account token too large")
	}
	resp, respBody, err := k.roundTrip(ctx, method, path, strings.TrimSpace(string(token)), body)
	if errors.Is(err, os.ErrDeadlineExceeded) || err != nil && ctx.Err() != nil {
		// What ran out, rather than the I/O it cut short.
		err = fmt.Errorf("%w (%v)", cmp.Or(ctx.Err(), context.DeadlineExceeded), err)
	}
	return resp, respBody, err
}

// roundTrip writes one request on a connection of its own and reads the answer.
func (k *kubeClient) roundTrip(ctx context.Context, method, path, token string, body []byte) (*http.Response, []byte, error) {
	dialer := &tls.Dialer{Config: k.tls}
	conn, err := dialer.DialContext(ctx, "tcp", k.api.Host)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.api.JoinPath(path).String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIResponse))
	return resp, respBody, err
}

// parseNamespace takes the labels and annotations of a Namespace object.
func parseNamespace(body []byte) (*namespaceInfo, error) {
	var ns struct {
		Metadata struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &ns); err != nil {
		return nil, err
	}
	return &namespaceInfo{labels: ns.Metadata.Labels, annotations: ns.Metadata.Annotations}, nil
}
