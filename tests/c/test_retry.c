/* A custom C retry policy controls the reconnect: it is asked with attempt numbers 1, 2, 3, ... and the library
 * waits at least the delay it returned before the next attempt; when it gives up the client ends
 * Disconnected / Retry_Expired; in POLL mode it is asked only inside iotconn_poll(), on the polling thread; the
 * count starts over only after a link stayed up backoff_reset_after_ms. */
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define WAIT_MS 60000
#define MAX_ASKS 64

static hubsim_t hub;
static pthread_t main_thread;

typedef struct ask {
	uint32_t attempt;
	int code;
	uint32_t delay_ms;
	int64_t at_ms;
} ask_t;

typedef struct policy {
	pthread_mutex_t mu;
	int nasks;
	ask_t asks[MAX_ASKS];
	uint32_t step_ms;   /* delay = attempt * step_ms */
	uint32_t give_up;   /* return 0 at this attempt; 0 = never */
	int poll_mode;      /* then every ask must come on the main thread inside iotconn_poll */
	volatile int in_poll;
	int wrong_thread;
} policy_t;

static int ask_policy(uint32_t attempt, int code, const char *msg, uint32_t *delay_ms, void *user)
{
	policy_t *p = user;
	(void)msg;
	pthread_mutex_lock(&p->mu);
	if (p->poll_mode && !(pthread_equal(pthread_self(), main_thread) && p->in_poll))
		p->wrong_thread++;
	int again = p->give_up == 0 || attempt < p->give_up;
	*delay_ms = attempt * p->step_ms;
	if (p->nasks < MAX_ASKS)
		p->asks[p->nasks++] = (ask_t){attempt, code, again ? *delay_ms : 0, now_ms()};
	pthread_mutex_unlock(&p->mu);
	return again;
}

static void policy_init(policy_t *p, uint32_t step_ms, uint32_t give_up)
{
	memset(p, 0, sizeof *p);
	pthread_mutex_init(&p->mu, NULL);
	p->step_ms = step_ms;
	p->give_up = give_up;
}

static void set_policy(iotconn_client_t *c, policy_t *p)
{
	iotconn_retry_policy_t rp = IOTCONN_RETRY_POLICY_INIT;
	rp.kind = IOTCONN_RETRY_CUSTOM;
	rp.custom = ask_policy;
	rp.user = p;
	CHECK_RC(iotconn_set_retry_policy(c, &rp), 0);
}

/* Asked 1, 2, 3, ... with an error code; each next attempt (the next ask, or the reconnect) not before the delay
 * the previous ask returned. */
static void check_asks(policy_t *p, int64_t reconnected_at)
{
	CHECK(p->nasks >= 2);
	for (int i = 0; i < p->nasks; i++) {
		CHECK(p->asks[i].attempt == (uint32_t)i + 1);
		CHECK(p->asks[i].code < 0 && p->asks[i].code >= IOTCONN_ETHROTTLED);
		int64_t next = i + 1 < p->nasks ? p->asks[i + 1].at_ms : reconnected_at;
		if (next >= 0 && next < p->asks[i].at_ms + p->asks[i].delay_ms) {
			fprintf(stderr, "attempt %d came %lld ms after an ask for %u ms\n", i + 2,
				(long long)(next - p->asks[i].at_ms), p->asks[i].delay_ms);
			test_failures++;
		}
	}
}

/* The hub goes down for 3 s while connected; the policy's delays pace the reconnect attempts. */
static void test_policy_paces_reconnect(void)
{
	policy_t p;
	policy_init(&p, 300, 0);
	recorder_t rec;
	recorder_init(&rec, 4);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-retry"), &o, &c), 0);
	recorder_attach(&rec, c);
	set_policy(c, &p);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	CHECK(hub_fault(&hub, "{\"kind\":\"hub-down\",\"seconds\":3}") == 0);
	int drop = recorder_wait_status(&rec, 1, IOTCONN_STATUS_DISCONNECTED_RETRYING,
					IOTCONN_REASON_COMMUNICATION_ERROR, WAIT_MS);
	CHECK(drop >= 1);
	int up = recorder_wait_status(&rec, drop + 1, IOTCONN_STATUS_CONNECTED, IOTCONN_REASON_CONNECTION_OK, WAIT_MS);
	CHECK(up > drop);
	pthread_mutex_lock(&p.mu);
	check_asks(&p, up > 0 ? rec.status[up].at_ms : -1);
	pthread_mutex_unlock(&p.mu);
	CHECK_RC(iotconn_client_destroy(c), 0);
	recorder_free(&rec);
}

/* A connection string to a port nobody listens on, so every attempt fails. */
static void refused_conn_str(char *cs, size_t cap)
{
	const char *real = hubsim_conn_str(&hub, "dev-retry");
	const char *dev = strstr(real, ";DeviceId=");
	snprintf(cs, cap, "HostName=127.0.0.1:1%s", dev ? dev : "");
}

/* The policy gives up at attempt 3: connect fails with IOTCONN_ERETRYEXPIRED, status Disconnected/Retry_Expired. */
static void test_policy_gives_up(void)
{
	policy_t p;
	policy_init(&p, 50, 3);
	recorder_t rec;
	recorder_init(&rec, 4);
	char cs[512];
	refused_conn_str(cs, sizeof cs);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(cs, &o, &c), 0);
	recorder_attach(&rec, c);
	set_policy(c, &p);
	CHECK_RC(iotconn_connect(c, WAIT_MS), IOTCONN_ERETRYEXPIRED);
	CHECK(recorder_wait_status(&rec, 0, IOTCONN_STATUS_DISCONNECTED, IOTCONN_REASON_RETRY_EXPIRED, WAIT_MS) >= 0);
	pthread_mutex_lock(&p.mu);
	CHECK(p.nasks == 3);
	check_asks(&p, -1);
	for (int i = 0; i < p.nasks; i++)
		CHECK(p.asks[i].code == IOTCONN_ENETWORK);
	pthread_mutex_unlock(&p.mu);
	CHECK_RC(iotconn_client_destroy(c), 0);
	recorder_free(&rec);
}

typedef struct connector {
	iotconn_client_t *client;
	volatile int done;
	int rc;
} connector_t;

static void *connect_thread(void *arg)
{
	connector_t *k = arg;
	k->rc = iotconn_connect(k->client, WAIT_MS);
	__atomic_store_n(&k->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* POLL mode: the policy runs only inside iotconn_poll() on the polling (main) thread, while another thread
 * blocks in iotconn_connect(). */
static void test_policy_in_poll_mode(void)
{
	policy_t p;
	policy_init(&p, 50, 3);
	p.poll_mode = 1;
	char cs[512];
	refused_conn_str(cs, sizeof cs);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_POLL);
	connector_t k = {0};
	CHECK_RC(iotconn_client_create(cs, &o, &k.client), 0);
	set_policy(k.client, &p);
	pthread_t t;
	pthread_create(&t, NULL, connect_thread, &k);
	int64_t deadline = now_ms() + WAIT_MS;
	while (!__atomic_load_n(&k.done, __ATOMIC_SEQ_CST) && now_ms() < deadline) {
		p.in_poll = 1;
		int n = iotconn_poll(k.client, 100);
		p.in_poll = 0;
		CHECK(n >= 0);
		if (n < 0)
			break;
	}
	pthread_join(t, NULL);
	CHECK(k.rc == IOTCONN_ERETRYEXPIRED);
	pthread_mutex_lock(&p.mu);
	CHECK(p.nasks == 3);
	CHECK(p.wrong_thread == 0);
	check_asks(&p, -1);
	pthread_mutex_unlock(&p.mu);
	CHECK_RC(iotconn_client_destroy(k.client), 0);
}

/* The policy's attempt number at the second of two link losses in a row (each link up at least 20 ms), with
 * options of the given size and backoff_reset_after_ms. */
static uint32_t second_loss_attempt(size_t size, uint32_t reset_after_ms)
{
	policy_t p;
	policy_init(&p, 50, 0);
	recorder_t rec;
	recorder_init(&rec, 4);
	iotconn_options_t o = hubsim_options(&hub, IOTCONN_DISPATCH_THREAD);
	o.size = size;
	o.backoff_reset_after_ms = reset_after_ms;
	iotconn_client_t *c = NULL;
	CHECK_RC(iotconn_client_create(hubsim_conn_str(&hub, "dev-retry"), &o, &c), 0);
	recorder_attach(&rec, c);
	set_policy(c, &p);
	CHECK_RC(iotconn_connect(c, WAIT_MS), 0);
	for (int loss = 0, up = 0; loss < 2 && up >= 0; loss++) {
		usleep(20000); /* the link's uptime is what the option is about: 20 ms is past a 1 ms reset time */
		CHECK(hub_fault(&hub, "{\"kind\":\"kill-tcp\",\"device\":\"dev-retry\"}") == 0);
		up = recorder_wait_status(&rec, up + 1, IOTCONN_STATUS_CONNECTED, IOTCONN_REASON_CONNECTION_OK, WAIT_MS);
		CHECK(up > 0);
	}
	CHECK_RC(iotconn_client_destroy(c), 0);
	recorder_free(&rec);
	pthread_mutex_lock(&p.mu);
	CHECK(p.nasks == 2 && p.asks[0].attempt == 1);
	uint32_t attempt = p.nasks == 2 ? p.asks[1].attempt : 0;
	pthread_mutex_unlock(&p.mu);
	return attempt;
}

/* backoff_reset_after_ms: the policy's count starts over only after a link stayed up that long (default 30 s); a
 * program built before the field (its size ends where the field starts) gets the default. */
static void test_backoff_reset_after(void)
{
	CHECK(second_loss_attempt(sizeof(iotconn_options_t), 0) == 2);
	CHECK(second_loss_attempt(sizeof(iotconn_options_t), 1) == 1);
	CHECK(second_loss_attempt(offsetof(iotconn_options_t, backoff_reset_after_ms), 1) == 2);
}

int main(void)
{
	main_thread = pthread_self();
	const char *devices[] = {"dev-retry", NULL};
	if (hubsim_start(&hub, devices) != 0)
		return 1;
	test_policy_gives_up();
	test_policy_in_poll_mode();
	test_policy_paces_reconnect();
	test_backoff_reset_after();
	hubsim_stop(&hub);
	return test_done("retry");
}
