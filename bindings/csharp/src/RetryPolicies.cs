using System;

namespace Iotconn
{
    /// <summary>
    /// Decides whether to try again after a failure and how long to wait first (as in
    /// Microsoft.Azure.Devices.Client). currentRetryCount counts from 0 for the first failure, as in the .NET SDK.
    /// A policy set with DeviceClient.SetRetryPolicy runs on the client's dispatcher thread, like the handlers;
    /// a reconnect waits for its answer, so it must return quickly.
    /// </summary>
    public interface IRetryPolicy
    {
        bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval);
    }

    /// <summary>
    /// Randomised exponential back-off, the .NET SDK's and the library's default policy; retryCount retries at most.
    /// With n = currentRetryCount (0 for the first retry), U[a, b] a fresh uniform draw and c = U[max(minBackoff,
    /// 0.8 maxBackoff), maxBackoff] the jittered cap, the delay before retry n is, by jitter:
    /// Default: U[max(minBackoff, x/2), x] with x = min(minBackoff + (2^n - 1) x U[0.8 deltaBackoff, 1.2 deltaBackoff],
    /// c), the first min(minBackoff + U[0, 0.8 deltaBackoff], c) (the .NET SDK waits exactly x, exactly minBackoff
    /// first and exactly maxBackoff once capped, which keeps a fleet that lost its hub together retrying in step);
    /// Full: U[minBackoff, min(minBackoff + (2^n - 1) x deltaBackoff, maxBackoff)], the first as Default's;
    /// Decorrelated: min(U[minBackoff, 3 x the previous delay], c), the first's previous being minBackoff.
    /// Set on a client, the library itself runs this schedule (no managed call per attempt); ShouldRetry computes
    /// the same schedule for policies that wrap this one.
    /// </summary>
    public sealed class ExponentialBackoff : IRetryPolicy
    {
        private readonly Random random = new Random();
        private double previousMs; // Decorrelated: the delay ShouldRetry returned last; guarded by random

        public ExponentialBackoff(int retryCount, TimeSpan minBackoff, TimeSpan maxBackoff, TimeSpan deltaBackoff)
            : this(retryCount, minBackoff, maxBackoff, deltaBackoff, Jitter.Default)
        {
        }

        public ExponentialBackoff(int retryCount, TimeSpan minBackoff, TimeSpan maxBackoff, TimeSpan deltaBackoff,
            Jitter jitter)
        {
            if (retryCount < 0)
            {
                throw IotconnException.InvalidArgument("retryCount", "must not be negative, not " + retryCount);
            }
            MinBackoffMs = Milliseconds("minBackoff", minBackoff);
            MaxBackoffMs = Milliseconds("maxBackoff", maxBackoff);
            DeltaBackoffMs = Milliseconds("deltaBackoff", deltaBackoff);
            if (MinBackoffMs > MaxBackoffMs)
            {
                throw IotconnException.InvalidArgument("minBackoff", minBackoff + " is greater than maxBackoff (" +
                    maxBackoff + ")");
            }
            if (!Enum.IsDefined(typeof(Jitter), jitter))
            {
                throw IotconnException.InvalidArgument("jitter", "unknown value " + jitter);
            }
            if (jitter == Jitter.Decorrelated && MinBackoffMs == 0)
            {
                throw IotconnException.InvalidArgument("minBackoff", "must be above 0 with Jitter.Decorrelated, " +
                    "which grows every delay from it");
            }
            RetryCount = retryCount;
            Jitter = jitter;
        }

        public int RetryCount { get; private set; }

        public Jitter Jitter { get; private set; }

        internal uint MinBackoffMs { get; private set; }
        internal uint MaxBackoffMs { get; private set; }
        internal uint DeltaBackoffMs { get; private set; }

        public bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval)
        {
            if (currentRetryCount < 0 || currentRetryCount >= RetryCount)
            {
                retryInterval = TimeSpan.Zero;
                return false;
            }
            double ms;
            lock (random)
            {
                double cap = Uniform(Math.Max(MinBackoffMs, 0.8 * MaxBackoffMs), MaxBackoffMs);
                if (Jitter == Jitter.Decorrelated)
                {
                    double previous = currentRetryCount == 0 ? MinBackoffMs : previousMs;
                    ms = previousMs = Math.Min(Uniform(MinBackoffMs, 3 * previous), cap);
                }
                else if (currentRetryCount == 0)
                {
                    ms = Math.Min(MinBackoffMs + Uniform(0, 0.8 * DeltaBackoffMs), cap);
                }
                else if (Jitter == Jitter.Full)
                {
                    ms = Uniform(MinBackoffMs, Grown(currentRetryCount, DeltaBackoffMs));
                }
                else
                {
                    double term = Math.Min(Grown(currentRetryCount, Uniform(0.8 * DeltaBackoffMs, 1.2 * DeltaBackoffMs)), cap);
                    ms = Uniform(Math.Max(MinBackoffMs, term / 2), term);
                }
            }
            retryInterval = TimeSpan.FromMilliseconds(ms);
            return true;
        }

        // min(minBackoff + (2^n - 1) x delta, maxBackoff); 2^n overflows to infinity for large n, which Math.Min
        // turns into maxBackoff (but infinity x 0 would be NaN).
        private double Grown(int n, double delta)
        {
            return delta == 0 ? MinBackoffMs : Math.Min(MinBackoffMs + (Math.Pow(2, n) - 1) * delta, MaxBackoffMs);
        }

        private double Uniform(double lo, double hi)
        {
            return lo + (hi - lo) * random.NextDouble();
        }

        internal static uint Milliseconds(string what, TimeSpan value)
        {
            double ms = Math.Round(value.TotalMilliseconds);
            if (ms < 0 || ms > uint.MaxValue)
            {
                throw IotconnException.InvalidArgument(what, "must be between 0 and " + uint.MaxValue + " ms, not " +
                    value);
            }
            return (uint)ms;
        }
    }

    /// <summary>Never retry: the first failure is final (the client ends Disconnected / Retry_Expired).</summary>
    public sealed class NoRetry : IRetryPolicy
    {
        public bool ShouldRetry(int currentRetryCount, Exception lastException, out TimeSpan retryInterval)
        {
            retryInterval = TimeSpan.Zero;
            return false;
        }
    }
}
