// Command peer serves revplane's catalog from go-control-plane's SnapshotCache, so that
// `cargo bench --bench peers` can load both servers with the same proxies and compare.
//
// It takes its clusters and assignments from a running revplane (one ADS fetch of CDS, then of
// EDS for every EDS cluster) and serves them over ADS (SotW, CDS and EDS) with one snapshot
// shared by every node. A POST to /stage fetches again and a POST to /publish sets what was
// fetched as the new snapshot: that is how the bench hands it the same one-endpoint change
// revplane got, measuring the push apart from the fetch.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The gRPC server settings of go-control-plane's own example server (internal/example).
const (
	keepaliveTime        = 30 * time.Second
	keepaliveTimeout     = 5 * time.Second
	keepaliveMinTime     = 30 * time.Second
	maxConcurrentStreams = 1000000
)

// group is the one snapshot key: every node gets the same configuration, as with revplane.
const group = "all"

type oneGroup struct{}

func (oneGroup) ID(*core.Node) string { return group }

// catalog is what one fetch from revplane returned.
type catalog struct {
	clusters    []types.Resource
	assignments []types.Resource
	cdsVersion  string
	edsVersion  string
}

// fetch reads every cluster and the assignment of every EDS cluster from revplane's ADS.
func fetch(ctx context.Context, from, revision string) (*catalog, error) {
	conn, err := grpc.NewClient(from,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	meta, err := structpb.NewStruct(map[string]any{"REVISION": revision})
	if err != nil {
		return nil, err
	}
	node := &core.Node{Id: "peer-fetch", Cluster: "peer", Metadata: meta}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		return nil, err
	}
	cds, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("CDS from %s: %w", from, err)
	}
	out := &catalog{}
	var names []string
	for _, any := range cds.GetResources() {
		c := &cluster.Cluster{}
		if err := any.UnmarshalTo(c); err != nil {
			return nil, err
		}
		out.clusters = append(out.clusters, c)
		if c.GetType() == cluster.Cluster_EDS {
			name := c.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = c.GetName()
			}
			names = append(names, name)
		}
	}
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: names}); err != nil {
		return nil, err
	}
	eds, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("EDS from %s: %w", from, err)
	}
	for _, any := range eds.GetResources() {
		a := &endpoint.ClusterLoadAssignment{}
		if err := any.UnmarshalTo(a); err != nil {
			return nil, err
		}
		out.assignments = append(out.assignments, a)
	}
	if len(out.assignments) != len(names) {
		return nil, fmt.Errorf("asked %s for %d assignments, got %d", from, len(names), len(out.assignments))
	}
	if out.cdsVersion, err = contentVersion(out.clusters); err != nil {
		return nil, err
	}
	if out.edsVersion, err = contentVersion(out.assignments); err != nil {
		return nil, err
	}
	return out, nil
}

// contentVersion hashes a type's resources, so a type whose content did not change keeps
// its version and is not pushed again (revplane's versions are content hashes too).
func contentVersion(resources []types.Resource) (string, error) {
	h := sha256.New()
	for _, r := range resources {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func (c *catalog) snapshot() (*cache.Snapshot, error) {
	s := &cache.Snapshot{}
	s.Resources[types.Cluster] = cache.NewResources(c.cdsVersion, c.clusters)
	s.Resources[types.Endpoint] = cache.NewResources(c.edsVersion, c.assignments)
	return s, s.Consistent()
}

// peer holds the cache and what was fetched but not yet published.
type peer struct {
	cache    cache.SnapshotCache
	from     string
	revision string
	mu       sync.Mutex
	staged   *catalog
}

// stage fetches the catalog and keeps it for publish.
func (p *peer) stage(ctx context.Context) (*catalog, error) {
	c, err := fetch(ctx, p.from, p.revision)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.staged = c
	return c, nil
}

// publish sets the staged catalog as the snapshot; returns when (Unix ms, taken just before
// SetSnapshot, which starts the push).
func (p *peer) publish(ctx context.Context) (float64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.staged == nil {
		return 0, fmt.Errorf("nothing staged: POST /stage first")
	}
	s, err := p.staged.snapshot()
	if err != nil {
		return 0, err
	}
	p.staged = nil
	published := float64(time.Now().UnixMicro()) / 1000
	return published, p.cache.SetSnapshot(ctx, group, s)
}

func (p *peer) handleStage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST /stage", http.StatusMethodNotAllowed)
		return
	}
	c, err := p.stage(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fmt.Fprintf(w, "{\"clusters\": %d, \"assignments\": %d, \"cds_version\": %q, \"eds_version\": %q}\n",
		len(c.clusters), len(c.assignments), c.cdsVersion, c.edsVersion)
}

func (p *peer) handlePublish(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST /publish", http.StatusMethodNotAllowed)
		return
	}
	published, err := p.publish(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	fmt.Fprintf(w, "{\"published_unix_ms\": %.3f}\n", published)
}

func main() {
	xdsAddr := flag.String("xds-addr", "127.0.0.1:18000", "ADS listen address")
	adminAddr := flag.String("admin-addr", "127.0.0.1:18001", "HTTP admin address (/ready, POST /stage, POST /publish)")
	from := flag.String("from", "", "revplane's xDS address to take the catalog from")
	revision := flag.String("revision", "default", "REVISION node metadata to send to revplane")
	flag.Parse()
	if *from == "" {
		log.Fatal("--from <revplane xds addr> is required")
	}
	ctx := context.Background()
	p := &peer{cache: cache.NewSnapshotCache(true, oneGroup{}, nil), from: *from, revision: *revision}
	c, err := p.stage(ctx)
	if err != nil {
		log.Fatalf("initial fetch from %s: %v", *from, err)
	}
	if _, err := p.publish(ctx); err != nil {
		log.Fatal(err)
	}
	log.Printf("serving %d clusters, %d assignments", len(c.clusters), len(c.assignments))

	grpcServer := grpc.NewServer(
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	)
	discovery.RegisterAggregatedDiscoveryServiceServer(grpcServer, server.NewServer(ctx, p.cache, server.CallbackFuncs{}))
	lis, err := net.Listen("tcp", *xdsAddr)
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(grpcServer.Serve(lis)) }()

	http.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") })
	http.HandleFunc("/stage", p.handleStage)
	http.HandleFunc("/publish", p.handlePublish)
	log.Fatal(http.ListenAndServe(*adminAddr, nil))
}
