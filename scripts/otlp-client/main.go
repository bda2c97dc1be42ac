// otlp-client sends log records to an OTLP endpoint with the OpenTelemetry
// project's own Go code, so drainpipe's OTLP input is tested against a real
// client: the SDK's otlploghttp (protobuf) and otlploggrpc exporters, and
// pdata's OTLP/JSON encoding (the encoder the Collector's otlphttp exporter
// uses for `encoding: json`; the Go SDK exporters speak protobuf only).
//
//	otlp-client -protocol http/protobuf -endpoint http://127.0.0.1:8080/otlp/myapp \
//	    -header 'Authorization=Bearer s3cret' -n 100
//	otlp-client -protocol grpc -endpoint localhost:4317 -ca ca.pem \
//	    -header 'x-drainpipe-app=myapp' -header 'authorization=Bearer s3cret' -n 100
//
// Every record i has body "record <i> of <run>", attribute seq=<i>, severity
// INFO (ERROR for every tenth), and, for the SDK exporters, a trace context.
// Exits 1 when any export failed after the exporter's own retries.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"
)

type headers map[string]string

// asGiven: the HTTP URL is -endpoint itself, not -endpoint + "/v1/logs".
var asGiven bool

// logsURL is where HTTP exports go: the Collector's otlphttp exporter
// appends /v1/logs to `endpoint` and uses `logs_endpoint` as given.
func logsURL(endpoint string) string {
	if asGiven {
		return endpoint
	}
	return strings.TrimSuffix(endpoint, "/") + "/v1/logs"
}

func (h headers) String() string { return fmt.Sprint(map[string]string(h)) }
func (h headers) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("header %q: want Name=value", v)
	}
	h[k] = val
	return nil
}

func main() {
	protocol := flag.String("protocol", "http/protobuf", "http/protobuf, http/json or grpc")
	endpoint := flag.String("endpoint", "", "http(s)://host:port/otlp/APP for HTTP (the exporter appends /v1/logs); host:port for grpc")
	n := flag.Int("n", 10, "log records to send")
	run := flag.String("run", "run", "text put in every body, to tell runs apart")
	app := flag.String("app", "myapp", "service.name resource attribute")
	batch := flag.Int("batch", 512, "records per export request")
	caFile := flag.String("ca", "", "PEM file of the CA to trust (grpc over TLS)")
	compression := flag.String("compression", "gzip", "request compression of the SDK exporters: gzip or none")
	timeout := flag.Duration("retry-for", 60*time.Second, "how long an exporter retries a failed export")
	hdrs := headers{}
	flag.Var(hdrs, "header", "request header Name=value (repeatable)")
	flag.BoolVar(&asGiven, "as-given", false, "HTTP: post to -endpoint exactly as given (like the Collector's logs_endpoint) instead of appending /v1/logs (its endpoint)")
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "otlp-client: -endpoint is required")
		os.Exit(2)
	}
	var err error
	if *protocol == "http/json" {
		err = sendJSON(*endpoint, hdrs, *n, *batch, *run, *app, *timeout)
	} else {
		err = sendSDK(*protocol, *endpoint, hdrs, *n, *batch, *run, *app, *caFile, *compression, *timeout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "otlp-client:", err)
		os.Exit(1)
	}
	fmt.Printf("sent %d records\n", *n)
}

func body(i int, run string) string { return fmt.Sprintf("record %d of %s", i, run) }

func severity(i int) (otellog.Severity, string) {
	if i%10 == 0 {
		return otellog.SeverityError, "ERROR"
	}
	return otellog.SeverityInfo, "INFO"
}

// traceContext gives record i a fixed, recognisable trace and span id.
func traceContext(i int) trace.SpanContext {
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], fmt.Sprintf("%016x", i+1))
	copy(sid[:], fmt.Sprintf("%08x", i+1))
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
}

func sendSDK(protocol, endpoint string, hdrs headers, n, batch int, run, app, caFile, compression string, retryFor time.Duration) error {
	gzip := compression == "gzip"
	if !gzip && compression != "none" {
		return fmt.Errorf("unknown -compression %q", compression)
	}
	ctx := context.Background()
	var failed atomic.Int64
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		failed.Add(1)
		fmt.Fprintln(os.Stderr, "otlp-client: export error:", err)
	}))
	var exp sdklog.Exporter
	var err error
	switch protocol {
	case "http/protobuf":
		u, perr := url.Parse(endpoint)
		if perr != nil {
			return perr
		}
		opts := []otlploghttp.Option{
			otlploghttp.WithEndpointURL(logsURL(u.String())),
			otlploghttp.WithHeaders(hdrs),
			otlploghttp.WithRetry(otlploghttp.RetryConfig{Enabled: true, InitialInterval: 200 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsedTime: retryFor}),
		}
		if gzip {
			opts = append(opts, otlploghttp.WithCompression(otlploghttp.GzipCompression))
		}
		exp, err = otlploghttp.New(ctx, opts...)
	case "grpc":
		opts := []otlploggrpc.Option{
			otlploggrpc.WithEndpoint(endpoint),
			otlploggrpc.WithHeaders(hdrs),
			otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: true, InitialInterval: 200 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsedTime: retryFor}),
		}
		if gzip {
			// grpc-encoding: gzip, the compressor the exporter registers.
			opts = append(opts, otlploggrpc.WithCompressor("gzip"))
		}
		if caFile != "" {
			creds, cerr := credentials.NewClientTLSFromFile(caFile, "")
			if cerr != nil {
				return cerr
			}
			opts = append(opts, otlploggrpc.WithTLSCredentials(creds))
		} else {
			opts = append(opts, otlploggrpc.WithInsecure())
		}
		exp, err = otlploggrpc.New(ctx, opts...)
	default:
		return fmt.Errorf("unknown -protocol %q", protocol)
	}
	if err != nil {
		return err
	}
	res := resource.NewSchemaless(attribute.String("service.name", app), attribute.String("heroku.dyno.name", "web.1"))
	proc := sdklog.NewBatchProcessor(exp, sdklog.WithExportMaxBatchSize(batch), sdklog.WithMaxQueueSize(n+batch), sdklog.WithExportTimeout(retryFor+10*time.Second))
	provider := sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(proc))
	logger := provider.Logger("drainpipe-otlp-client")
	for i := 0; i < n; i++ {
		var r otellog.Record
		sev, text := severity(i)
		r.SetTimestamp(time.Now())
		r.SetSeverity(sev)
		r.SetSeverityText(text)
		r.SetBody(attribute.StringValue(body(i, run)))
		r.AddAttributes(attribute.Int("seq", i), attribute.String("run", run))
		logger.Emit(trace.ContextWithSpanContext(ctx, traceContext(i)), r)
	}
	if err := provider.Shutdown(ctx); err != nil {
		return err
	}
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d export errors", f)
	}
	return nil
}

func sendJSON(endpoint string, hdrs headers, n, batch int, run, app string, retryFor time.Duration) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}}
	target := logsURL(endpoint)
	for start := 0; start < n; start += batch {
		logs := plog.NewLogs()
		rl := logs.ResourceLogs().AppendEmpty()
		rl.Resource().Attributes().PutStr("service.name", app)
		rl.Resource().Attributes().PutStr("heroku.dyno.name", "web.1")
		sl := rl.ScopeLogs().AppendEmpty()
		sl.Scope().SetName("drainpipe-otlp-client")
		for i := start; i < n && i < start+batch; i++ {
			lr := sl.LogRecords().AppendEmpty()
			lr.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
			sev, text := severity(i)
			lr.SetSeverityNumber(plog.SeverityNumber(sev))
			lr.SetSeverityText(text)
			lr.Body().SetStr(body(i, run))
			lr.Attributes().PutInt("seq", int64(i))
			lr.Attributes().PutStr("run", run)
			sc := traceContext(i)
			lr.SetTraceID(pcommon.TraceID(sc.TraceID()))
			lr.SetSpanID(pcommon.SpanID(sc.SpanID()))
		}
		payload, err := plogotlp.NewExportRequestFromLogs(logs).MarshalJSON()
		if err != nil {
			return err
		}
		if err := postWithRetry(client, target, hdrs, payload, retryFor); err != nil {
			return err
		}
	}
	return nil
}

// postWithRetry retries what the OTLP/HTTP spec calls retryable (429, 502,
// 503, 504), honouring Retry-After, as the Collector's exporter does.
func postWithRetry(client *http.Client, target string, hdrs headers, payload []byte, retryFor time.Duration) error {
	deadline := time.Now().Add(retryFor)
	wait := 200 * time.Millisecond
	for {
		req, err := http.NewRequest(http.MethodPost, target, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdrs {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		status := 0
		if err == nil {
			status = resp.StatusCode
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			resp.Body.Close()
			if status == http.StatusOK {
				return nil
			}
			if status != 429 && status != 502 && status != 503 && status != 504 {
				return fmt.Errorf("POST %s: %d %s", target, status, buf.String())
			}
			if ra := resp.Header.Get("Retry-After"); ra != "" {
				if secs, perr := time.ParseDuration(ra + "s"); perr == nil {
					wait = secs
				}
			}
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("POST %s: still failing after %s (last status %d, error %v)", target, retryFor, status, err)
		}
		time.Sleep(wait)
	}
}
