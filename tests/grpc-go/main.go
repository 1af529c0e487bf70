// Command grpc-call is the grpc-go twin of tests/python/grpc_call.py: a proxyless gRPC
// client (grpc-go's own xDS client) for revplane's end-to-end tests.
//
// Usage: grpc-call [--timeout SECONDS] [--authority HOST:PORT] TARGET...
//
// TARGET is `xds:///greeter.demo.svc.cluster.local:50051` (the bootstrap comes from
// GRPC_XDS_BOOTSTRAP) or a plain host:port. It calls /revplane.test.Echo/Echo
// (tests/python/grpc_server.py) with the raw bytes "ping", without wait-for-ready, and prints
// one JSON line per target, in the same shape as grpc_call.py:
//
//	{"target": ..., "code": "OK" | "UNAVAILABLE" | ..., "details": str | null, "reply": str | null}
//
// The exit code is 0 whatever the calls returned: the test judges the outcome.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers
)

// rawCodec sends and receives messages as the bytes they are: no protoc, no generated code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type outcome struct {
	Target  string  `json:"target"`
	Code    string  `json:"code"`
	Details *string `json:"details"`
	Reply   *string `json:"reply"`
}

// codeName spells a status code as grpcio does: Unavailable -> UNAVAILABLE,
// DeadlineExceeded -> DEADLINE_EXCEEDED.
func codeName(camel string) string {
	var b strings.Builder
	for i, r := range camel {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

func call(target string, timeout time.Duration, authority string) outcome {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	out := outcome{Target: target}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		details := err.Error()
		out.Code, out.Details = "CLIENT_ERROR", &details
		return out
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	request, reply := []byte("ping"), []byte(nil)
	err = conn.Invoke(ctx, "/revplane.test.Echo/Echo", &request, &reply, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		s := status.Convert(err)
		details := s.Message()
		out.Code, out.Details = codeName(s.Code().String()), &details
		return out
	}
	text := string(reply)
	out.Code, out.Reply = "OK", &text
	return out
}

func main() {
	timeout := flag.Float64("timeout", 10, "deadline of each call, in seconds (as grpc_call.py)")
	authority := flag.String("authority", "", ":authority to send (default: from the target)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: grpc-call [--timeout SECONDS] [--authority HOST:PORT] TARGET...")
		os.Exit(2)
	}
	for _, target := range flag.Args() {
		deadline := time.Duration(*timeout * float64(time.Second))
		line, _ := json.Marshal(call(target, deadline, *authority))
		fmt.Println(string(line))
	}
}
