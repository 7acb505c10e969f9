// Command memory measures what an idle connected device costs a process: it connects N devices (iotconn's
// core.Client, each with its own dispatcher or all on one shared core.Dispatcher, or raw paho as IoT Hub's wire
// needs it; or iotconn over AMQP, a connection per device or all pooled on shared connections), waits until all
// are connected, collects garbage, and
// prints the growth per device of the resident set, Go's heap and goroutine stacks, and the goroutines each
// device keeps. bench/memory/run.sh runs it against hubsim for both and writes bench/results/memory.txt.
//
//	memory -mode iotconn|iotconn-shared|paho|amqp|amqp-pool -devices FILE -ca CA_FILE [-heapprofile FILE]
//	       [-goroutines FILE]
//
// FILE holds one connection string a line; every line is one device (for the AMQP modes with GatewayHostName
// naming the hub's AMQP port). amqp-pool puts up to core.MaxAMQPPool devices on each connection.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iotconn/iotconn/bench/internal/pahodevice"
	"github.com/iotconn/iotconn/core"
)

// connectWorkers bounds the connects in flight: enough to finish N = 2 000 in seconds, few enough that a local
// hubsim is not throttled into retries.
const connectWorkers = 16

func main() {
	mode := flag.String("mode", "iotconn", "iotconn, iotconn-shared (one Dispatcher for all), paho, amqp (a "+
		"connection per device) or amqp-pool (devices sharing connections)")
	devicesFile := flag.String("devices", "", "file of connection strings, one a line")
	caFile := flag.String("ca", "", "PEM file of the hub's CA")
	heapProfile := flag.String("heapprofile", "", "write a heap profile here once all are connected")
	goroutines := flag.String("goroutines", "", "write every goroutine's stack here once all are connected")
	flag.Parse()
	runtime.MemProfileRate = 512 // fine enough to attribute a device's few KiB to the code that holds them
	if err := run(*mode, *devicesFile, *caFile, *heapProfile, *goroutines); err != nil {
		fmt.Fprintln(os.Stderr, "memory:", err)
		os.Exit(1)
	}
}

func run(mode, devicesFile, caFile, heapProfile, goroutines string) error {
	conns, err := readLines(devicesFile)
	if err != nil {
		return err
	}
	var connect func(cs string) (stop func(), err error)
	switch mode {
	case "iotconn":
		connect = func(cs string) (func(), error) { return connectIotconn(cs, core.Options{CAFile: caFile}) }
	case "iotconn-shared":
		d, err := core.NewDispatcher(core.DispatchThread)
		if err != nil {
			return err
		}
		defer d.Close() // after the deferred stops below: a dispatcher closes once its clients did
		connect = func(cs string) (func(), error) {
			return connectIotconn(cs, core.Options{CAFile: caFile, Dispatcher: d})
		}
	case "amqp", "amqp-pool":
		opts := core.Options{CAFile: caFile, Transport: core.TransportAMQP}
		if mode == "amqp-pool" {
			opts.AMQPPool = core.MaxAMQPPool
		}
		connect = func(cs string) (func(), error) { return connectIotconn(cs, opts) }
	case "paho":
		connect = func(cs string) (func(), error) {
			client, _, err := pahodevice.Connect(cs, caFile)
			if err != nil {
				return nil, err
			}
			return func() { client.Disconnect(0) }, nil
		}
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}

	before := measure()
	stops, err := connectAll(conns, connect)
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	if err != nil {
		return err
	}
	after := measure()
	if err := writeProfile(heapProfile, "heap", 0); err != nil {
		return err
	}
	if err := writeProfile(goroutines, "goroutine", 2); err != nil {
		return err
	}
	n := float64(len(conns))
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / n / 1024 }
	fmt.Printf("mode=%s devices=%d rss_kib_per_device=%.1f heap_kib_per_device=%.1f stack_kib_per_device=%.1f "+
		"other_go_kib_per_device=%.1f goroutines_per_device=%.2f\n", mode, len(conns),
		per(after.rss, before.rss), per(after.heap, before.heap), per(after.stack, before.stack),
		per(after.other, before.other), float64(after.goroutines-before.goroutines)/n)
	return nil
}

// writeProfile writes the named runtime profile to path, if path is set.
func writeProfile(path, name string, debug int) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup(name).WriteTo(f, debug)
}

func connectIotconn(cs string, opts core.Options) (func(), error) {
	c, err := core.NewClient(cs, opts)
	if err != nil {
		return nil, err
	}
	stop := func() {
		c.Close()
		<-c.Done()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// connectAll connects every device with connectWorkers at a time and returns how to stop the connected ones.
func connectAll(conns []string, connect func(string) (func(), error)) ([]func(), error) {
	var (
		mu    sync.Mutex
		stops []func()
		first error
		wg    sync.WaitGroup
	)
	next := make(chan string)
	for range connectWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cs := range next {
				stop, err := connect(cs)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if stop != nil {
					stops = append(stops, stop)
				}
				mu.Unlock()
			}
		}()
	}
	for _, cs := range conns {
		next <- cs
	}
	close(next)
	wg.Wait()
	return stops, first
}

type usage struct {
	rss, heap, stack, other uint64
	goroutines              int
}

// measure collects garbage twice (finalisers of the first free more in the second) and reads the process's
// memory: the resident set, Go's heap in use, goroutine stacks and Go's other runtime memory.
func measure() usage {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{rss: rssBytes(), heap: ms.HeapInuse, stack: ms.StackInuse,
		other:      ms.MSpanInuse + ms.MCacheInuse + ms.BuckHashSys + ms.GCSys + ms.OtherSys,
		goroutines: runtime.NumGoroutine()}
}

// rssBytes reads VmRSS from /proc/self/status (0 if unavailable).
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return nil, errors.New(path + " lists no device")
	}
	return lines, nil
}
