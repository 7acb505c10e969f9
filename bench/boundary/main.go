// Command boundary measures what a window of one costs at the C ABI's edge before any engine code runs: a C
// thread calls into Go, a goroutine takes the call over a channel and signals a condition variable the C thread
// waits on, as iotconn_send and a thread-dispatch send callback do. Beside it, the same hand-off between two
// goroutines, as a Go program using paho directly has it. bench/run.sh window1 prints both with the window-1
// figures: the difference is a floor under the C ABI's latency that no change in the engine can remove.
//
//	go run ./bench/boundary -n 20000 -rounds 5
package main

/*
#include <pthread.h>
#include <time.h>

extern void boundaryCall(void);

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int answered;

static void answer(void)
{
	pthread_mutex_lock(&mu);
	answered = 1;
	pthread_mutex_unlock(&mu);
	pthread_cond_signal(&cond);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *round_trips(void *arg)
{
	long n = (long)arg;
	double start = now_s();
	for (long i = 0; i < n; i++) {
		pthread_mutex_lock(&mu);
		answered = 0;
		pthread_mutex_unlock(&mu);
		boundaryCall();
		pthread_mutex_lock(&mu);
		while (!answered)
			pthread_cond_wait(&cond, &mu);
		pthread_mutex_unlock(&mu);
	}
	return (void *)(long)((now_s() - start) * 1e9 / n);
}

// run_c makes n round trips from a fresh C thread and returns the mean in nanoseconds.
static long run_c(long n)
{
	pthread_t t;
	void *ns;
	pthread_create(&t, 0, round_trips, (void *)n);
	pthread_join(t, &ns);
	return (long)ns;
}
*/
import "C"

import (
	"flag"
	"fmt"
	"time"
)

var calls = make(chan struct{})

//export boundaryCall
func boundaryCall() { calls <- struct{}{} }

func main() {
	n := flag.Int("n", 20000, "round trips per round")
	rounds := flag.Int("rounds", 5, "rounds of each kind")
	flag.Parse()

	go func() { // the C ABI's dispatcher: it answers each call through C
		for range calls {
			C.answer()
		}
	}()
	goCalls, goAnswers := make(chan struct{}), make(chan struct{})
	go func() { // a Go program's: it answers each call with a channel
		for range goCalls {
			goAnswers <- struct{}{}
		}
	}()
	for r := 1; r <= *rounds; r++ {
		cNS := C.run_c(C.long(*n))
		start := time.Now()
		for range *n {
			goCalls <- struct{}{}
			<-goAnswers
		}
		goNS := time.Since(start).Nanoseconds() / int64(*n)
		fmt.Printf("round=%d c_thread_round_trip_us=%.1f goroutine_round_trip_us=%.1f\n", r,
			float64(cNS)/1e3, float64(goNS)/1e3)
	}
}
