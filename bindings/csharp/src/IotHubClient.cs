using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;

namespace Iotconn
{
    /// <summary>
    /// What DeviceClient and ModuleClient share: a device's or a module's connection to IoT Hub through libiotconn,
    /// everything but how a client is made.
    /// Threads: the client runs in the library's POLL dispatch mode and owns one managed thread, the dispatcher
    /// (Impl/DispatchThread.cs), that calls iotconn_poll in a loop, or shares a Dispatcher's
    /// (ClientOptions.Dispatcher); every handler runs there. No thread created by the Go runtime ever runs managed
    /// code (Mono hangs at exit otherwise).
    /// </summary>
    public abstract partial class IotHubClient : IDisposable, IDispatched
    {
        // OpenAsync's cancellation repeats iotconn_connect_cancel every CancelRoundMs until iotconn_connect returned,
        // at most CancelRounds times.
        private const int CancelRoundMs = 10;
        private const int CancelRounds = 300;

        private readonly ClientHandle handle;
        private readonly DispatchThread dispatcher;
        private readonly bool ownsThread;
        private readonly Completions<bool> sends = new Completions<bool>(); // by message id
        private volatile bool closed;
        private readonly bool useTwin; // ClientOptions.UseTwin

        // Native code may call these until iotconn_client_destroy returns, so they live as long as the client.
        private readonly NativeMethods.StatusCallback statusCallback;
        private readonly NativeMethods.MessageCallback messageCallback;
        private readonly NativeMethods.SendCallback sendCallback;
        private readonly NativeMethods.LogCallback logCallback;
        private readonly NativeMethods.RetryCallback retryCallback;

        private volatile ConnectionStatusChangesHandler statusHandler;
        private volatile Func<Message, object, Task> messageHandler;
        private volatile object messageHandlerContext;
        private volatile IRetryPolicy customRetryPolicy;

        // Internal: DeviceClient and ModuleClient are the only kinds.
        internal IotHubClient(ClientHandle handle, Dispatcher shared, bool useTwin)
        {
            this.handle = handle;
            this.useTwin = useTwin;
            // Its own dispatcher thread, or a shared Dispatcher's, which may already poll this client's events.
            ownsThread = shared == null;
            dispatcher = ownsThread ? new DispatchThread(ms => NativeMethods.iotconn_poll(handle, ms), true)
                : shared.Thread;
            statusCallback = OnStatus;
            messageCallback = OnMessage;
            sendCallback = OnSendComplete;
            logCallback = OnLog;
            retryCallback = OnRetry;
            Check(NativeMethods.iotconn_register_status_callback(handle, statusCallback, IntPtr.Zero));
            Check(NativeMethods.iotconn_register_message_callback(handle, messageCallback, IntPtr.Zero));
            Check(NativeMethods.iotconn_register_send_callback(handle, sendCallback, IntPtr.Zero));
            Check(NativeMethods.iotconn_register_log_callback(handle, logCallback, IntPtr.Zero));
            // Messages loaded from the QueueDirectory took the ids 1..count; their completions come like any send's.
            ulong recovered;
            Check(NativeMethods.iotconn_queue_recovered(handle, out recovered));
            var recoveredSends = new List<Task>();
            for (ulong id = 1; id <= recovered; id++)
            {
                recoveredSends.Add(sends.Register(id));
            }
            RecoveredSends = recoveredSends.AsReadOnly();
            dispatcher.Attach(this);
            if (ownsThread)
            {
                dispatcher.Start();
            }
        }

        /// <summary>A client of a connection string (ModuleClient: one that names a module); it does not
        /// connect.</summary>
        internal static T FromConnectionString<T>(string connectionString, TransportType transportType,
            ClientOptions options, bool module, Func<ClientHandle, Dispatcher, bool, T> make)
        {
            if (connectionString == null)
            {
                throw IotconnException.InvalidArgument("connectionString", "must not be null");
            }
            if (module && !NamesModule(connectionString))
            {
                throw IotconnException.InvalidArgument("connectionString", "a ModuleClient needs a module's " +
                    "connection string (HostName=..;DeviceId=..;ModuleId=..;SharedAccessKey=<the module's key>), " +
                    "and this one has no ModuleId; a device connects with DeviceClient");
            }
            byte[] utf8 = NativeMethods.ToUtf8(connectionString);
            return Create(options, transportType, (ref NativeMethods.Options native, NativeBlocks blocks,
                out ClientHandle handle) => NativeMethods.iotconn_client_create(utf8, ref native, out handle), make);
        }

        // Whether the connection string has a ModuleId field (the key in any case, as the library reads it); the
        // library validates its value and the rest.
        private static bool NamesModule(string connectionString)
        {
            foreach (string field in connectionString.Split(';'))
            {
                int eq = field.IndexOf('=');
                if (eq >= 0 && string.Equals(field.Substring(0, eq).Trim(), "ModuleId",
                    StringComparison.OrdinalIgnoreCase))
                {
                    return true;
                }
            }
            return false;
        }

        internal static NativeMethods.DpsParams DpsNative(string globalDeviceEndpoint, string idScope,
            SecurityProvider security, string payloadJson, NativeBlocks blocks)
        {
            var native = new NativeMethods.DpsParams
            {
                Size = new UIntPtr((uint)Marshal.SizeOf(typeof(NativeMethods.DpsParams))),
                ProvisioningHost = blocks.Utf8(globalDeviceEndpoint),
                IdScope = blocks.Utf8(idScope),
                RegistrationId = blocks.Utf8(security.RegistrationId),
                PayloadJson = blocks.Utf8(payloadJson),
            };
            security.Fill(ref native, blocks);
            return native;
        }

        internal delegate int NativeCreate(ref NativeMethods.Options native, NativeBlocks blocks,
            out ClientHandle handle);

        internal static T Create<T>(ClientOptions options, TransportType transportType, NativeCreate create,
            Func<ClientHandle, Dispatcher, bool, T> make)
        {
            if (!Enum.IsDefined(typeof(TransportType), transportType))
            {
                throw IotconnException.InvalidArgument("transportType", "unknown transport type " + transportType);
            }
            NativeMethods.EnsureCompatible();
            Dispatcher shared = options == null ? null : options.Dispatcher;
            bool useTwin = options != null && options.UseTwin;
            ClientHandle handle = null;
            using (var blocks = new NativeBlocks())
            {
                NativeMethods.Options native = ToNative(options ?? new ClientOptions(), transportType, blocks);
                Func<IntPtr, int> createWith = dispatcherHandle =>
                {
                    native.Dispatcher = dispatcherHandle;
                    return create(ref native, blocks, out handle);
                };
                int rc = shared == null ? createWith(IntPtr.Zero) : shared.CreateClient(createWith);
                if (rc < 0)
                {
                    throw IotconnException.FromLastError(rc);
                }
            }
            try
            {
                return make(handle, shared, useTwin);
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }

        /// <summary>How many DPS registrations (each billed by DPS) this client made: 0 while it uses a cached
        /// assignment and for a client of a connection string, one more per reprovision.</summary>
        public int ProvisioningRegistrations
        {
            get
            {
                ThrowIfClosed();
                ulong count;
                Check(NativeMethods.iotconn_dps_registrations(handle, out count));
                return (int)count;
            }
        }

        /// <summary>The hub a provisioned client connects to now; null before its first assignment and for a client
        /// of a connection string.</summary>
        public string AssignedHub
        {
            get { return Assignment()[0]; }
        }

        /// <summary>The device id of a provisioned client's assignment; null as AssignedHub.</summary>
        public string AssignedDeviceId
        {
            get { return Assignment()[1]; }
        }

        private string[] Assignment()
        {
            ThrowIfClosed();
            IntPtr hub, device;
            Check(NativeMethods.iotconn_dps_assignment(handle, out hub, out device));
            return new[] { NativeMethods.TakeUtf8(hub), NativeMethods.TakeUtf8(device) };
        }

        internal static NativeMethods.Options ToNative(ClientOptions options, TransportType transportType,
            NativeBlocks blocks)
        {
            if (!Enum.IsDefined(typeof(QueueOverflow), options.QueueOverflow))
            {
                throw IotconnException.InvalidArgument("QueueOverflow", "unknown value " + options.QueueOverflow);
            }
            return new NativeMethods.Options
            {
                Size = new UIntPtr((uint)Marshal.SizeOf(typeof(NativeMethods.Options))),
                Transport = (int)transportType,
                CaFile = blocks.Utf8(options.CaFile),
                CaPem = blocks.Utf8(options.CaPem),
                CertFile = blocks.Utf8(options.CertificateFile),
                KeyFile = blocks.Utf8(options.KeyFile),
                KeepaliveS = Positive("KeepAliveInSeconds", options.KeepAliveInSeconds),
                SasLifetimeS = Seconds("SasTokenTimeToLive", options.SasTokenTimeToLive),
                SasRenewMarginS = Seconds("SasTokenRenewalMargin", options.SasTokenRenewalMargin),
                QueueMaxMessages = Positive("QueueMaxMessages", options.QueueMaxMessages),
                QueueMaxBytes = options.QueueMaxBytes.HasValue
                    ? (ulong)Positive("QueueMaxBytes", options.QueueMaxBytes.Value, long.MaxValue) : 0,
                OperationTimeoutMs = options.OperationTimeout.HasValue
                    ? (uint)Positive("OperationTimeout", (long)Math.Ceiling(options.OperationTimeout.Value
                        .TotalMilliseconds), uint.MaxValue) : 0,
                Dispatch = NativeMethods.DispatchPoll,
                QueueOverflow = (int)options.QueueOverflow,
                QueueDir = blocks.Utf8(options.QueueDirectory),
                BackoffResetAfterMs = options.BackoffResetAfter.HasValue
                    ? (uint)Positive("BackoffResetAfter", (long)Math.Ceiling(options.BackoffResetAfter.Value
                        .TotalMilliseconds), uint.MaxValue) : 0,
                // 0 is off, the default too: no floor of 1 ms as above.
                ReconnectSpreadMs = options.ReconnectSpread.HasValue
                    ? ExponentialBackoff.Milliseconds("ReconnectSpread", options.ReconnectSpread.Value) : 0,
                Admission = options.Admission == null ? IntPtr.Zero : options.Admission.Handle,
                // 0 is off, the default too.
                AmqpPool = options.AmqpPool.HasValue && options.AmqpPool.Value != 0
                    ? (uint)Positive("AmqpPool", options.AmqpPool.Value, int.MaxValue) : 0,
            };
        }

        internal static uint Positive(string what, int? value)
        {
            return value.HasValue ? (uint)Positive(what, value.Value, int.MaxValue) : 0;
        }

        internal static uint Seconds(string what, TimeSpan? value)
        {
            return value.HasValue ? (uint)Positive(what, (long)Math.Ceiling(value.Value.TotalSeconds), uint.MaxValue)
                : 0;
        }

        // Zero means "the default" to the library, so an explicit value must be at least 1.
        private static long Positive(string what, long value, long max)
        {
            if (value < 1 || value > max)
            {
                throw IotconnException.InvalidArgument(what, "must be between 1 and " + max + ", not " + value);
            }
            return value;
        }

        /// <summary>Handler of status changes; runs on the dispatcher thread. Set it before OpenAsync.</summary>
        public void SetConnectionStatusChangesHandler(ConnectionStatusChangesHandler handler)
        {
            ThrowIfClosed();
            statusHandler = handler;
        }

        /// <summary>Handler of cloud-to-device messages (null removes it); runs on the dispatcher thread.</summary>
        public Task SetReceiveMessageHandlerAsync(Func<Message, object, Task> handler, object userContext,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            cancellationToken.ThrowIfCancellationRequested();
            ThrowIfClosed();
            messageHandlerContext = userContext;
            messageHandler = handler;
            return Task.FromResult(true);
        }

        /// <summary>Durable mode: one task per undelivered message this client loaded from
        /// ClientOptions.QueueDirectory, in their original order; they go out after OpenAsync and complete as
        /// SendEventAsync's tasks do. Empty without a QueueDirectory.</summary>
        public IReadOnlyList<Task> RecoveredSends { get; private set; }

        /// <summary>The loaded libiotconn's version, e.g. "1.1.0".</summary>
        public static string LibraryVersion
        {
            get { return NativeMethods.Version(); }
        }

        /// <summary>
        /// Replaces the retry policy (the default is the .NET SDK's: ExponentialBackoff(int.MaxValue, 100 ms, 10 s,
        /// 100 ms)). ExponentialBackoff and NoRetry run inside the library; any other IRetryPolicy is asked on the
        /// dispatcher thread after each failed attempt.
        /// </summary>
        public void SetRetryPolicy(IRetryPolicy retryPolicy)
        {
            if (retryPolicy == null)
            {
                throw IotconnException.InvalidArgument("retryPolicy", "must not be null");
            }
            ThrowIfClosed();
            var native = new NativeMethods.RetryPolicy
            {
                Size = new UIntPtr((uint)Marshal.SizeOf(typeof(NativeMethods.RetryPolicy))),
            };
            var exponential = retryPolicy as ExponentialBackoff;
            if (exponential != null)
            {
                native.Kind = NativeMethods.RetryExponential;
                native.RetryCount = exponential.RetryCount;
                native.MinBackoffMs = exponential.MinBackoffMs;
                native.MaxBackoffMs = exponential.MaxBackoffMs;
                native.DeltaBackoffMs = exponential.DeltaBackoffMs;
                native.Jitter = (int)exponential.Jitter;
            }
            else if (retryPolicy is NoRetry)
            {
                native.Kind = NativeMethods.RetryNone;
            }
            else
            {
                native.Kind = NativeMethods.RetryCustom;
                native.Custom = Marshal.GetFunctionPointerForDelegate(retryCallback);
            }
            bool custom = native.Kind == NativeMethods.RetryCustom;
            IRetryPolicy previous = customRetryPolicy;
            if (custom)
            {
                // In place before the library may ask it: the dispatcher may be polling.
                customRetryPolicy = retryPolicy;
            }
            int rc = NativeMethods.iotconn_set_retry_policy(handle, ref native);
            if (rc < 0)
            {
                customRetryPolicy = previous;
                throw IotconnException.FromLastError(rc);
            }
            if (!custom)
            {
                customRetryPolicy = null;
            }
        }

        /// <summary>Connects; completes once Connected, or fails with the reason the library gave up.</summary>
        /// <remarks>Cancelling cancellationToken abandons the connect in progress (iotconn_connect_cancel): the task
        /// then ends canceled within milliseconds rather than at the OperationTimeout, the client is
        /// Disconnected/Retry_Expired, sends queued meanwhile fail with ErrorCode.Canceled, and OpenAsync may be
        /// called again. It ends every OpenAsync in progress on this client: one whose own token was not cancelled
        /// fails with ErrorCode.Canceled. Once connected, cancelling the token changes nothing.</remarks>
        public Task OpenAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            cancellationToken.ThrowIfCancellationRequested();
            ThrowIfClosed();
            FixSubscriptions(useTwin);
            // iotconn_connect blocks: run it on a pool thread (a managed thread calling out, never called into).
            return Task.Run(() => Connect(cancellationToken), cancellationToken);
        }

        private void Connect(CancellationToken cancellationToken)
        {
            Thread connecting = Thread.CurrentThread;
            int rc;
            using (var returned = new ManualResetEventSlim())
            {
                // Disposing the registration waits for a CancelConnect in progress, so it never outlives returned.
                using (cancellationToken.Register(() => CancelConnect(connecting, returned)))
                {
                    try
                    {
                        // Cancelled before the registration (CancelConnect ran here and did nothing): do not connect.
                        rc = cancellationToken.IsCancellationRequested ? (int)ErrorCode.Canceled
                            : NativeMethods.iotconn_connect(handle, 0);
                    }
                    finally
                    {
                        returned.Set();
                    }
                }
            }
            if (rc == (int)ErrorCode.Canceled)
            {
                // Canceled by this token, or else by another OpenAsync's (then it stays an IotconnException).
                cancellationToken.ThrowIfCancellationRequested();
            }
            Check(rc);
        }

        // Runs on the thread that cancels OpenAsync's token. iotconn_connect_cancel reaches only a connect that is in
        // progress, and the pool thread may not be inside iotconn_connect yet: repeat it until that call returned.
        private void CancelConnect(Thread connecting, ManualResetEventSlim returned)
        {
            if (Thread.CurrentThread == connecting)
            {
                return;
            }
            for (int round = 0; round < CancelRounds; round++)
            {
                try
                {
                    // Its only error, BadHandle, cannot happen while the SafeHandle is alive.
                    NativeMethods.iotconn_connect_cancel(handle);
                }
                catch (ObjectDisposedException)
                {
                    // The client was disposed meanwhile: its close ends the connect (ErrorCode.Closed).
                    return;
                }
                if (returned.Wait(CancelRoundMs))
                {
                    return;
                }
            }
        }

        /// <summary>Queues a message; completes when the hub acknowledged it, fails when it expired or
        /// failed.</summary>
        public Task SendEventAsync(Message message)
        {
            if (message == null)
            {
                throw IotconnException.InvalidArgument("message", "must not be null");
            }
            ThrowIfClosed();
            ulong id;
            using (NativeMessage native = message.ToNative())
            {
                Check(NativeMethods.iotconn_send(handle, ref native.Value, out id));
            }
            return sends.Register(id);
        }

        /// <summary>Closes the connection, lets the last events run, stops the dispatcher and frees the
        /// client.</summary>
        public Task CloseAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (dispatcher.OnThread)
            {
                // From inside a handler: the dispatcher frees the client once the handler returns.
                Shutdown();
                return Task.FromResult(true);
            }
            return Task.Run(() => Shutdown());
        }

        public void Dispose()
        {
            Shutdown();
        }

        private void Shutdown()
        {
            if (!closed)
            {
                closed = true;
                dispatcher.Closing(this);
                int rc = NativeMethods.iotconn_close(handle);
                if (rc < 0)
                {
                    Trace.TraceError("iotconn: iotconn_close failed: " + IotconnException.FromLastError(rc).Message);
                    dispatcher.Finish(this); // no final event will come
                }
            }
            if (!dispatcher.OnThread)
            {
                dispatcher.WaitReleased(this);
                if (ownsThread)
                {
                    dispatcher.Join();
                }
            }
        }

        // The dispatcher thread calls this between two polls, so no callback of this client runs meanwhile.
        void IDispatched.Release()
        {
            handle.Dispose();
            sends.Release(ShutDownBeforeCompletion);
            ReleaseTwins();
        }

        private static Exception ShutDownBeforeCompletion()
        {
            return new IotconnException(ErrorCode.Closed, "the client was shut down before the message completed");
        }

        // ---- callbacks: they run inside iotconn_poll, on the dispatcher thread ----

        private void OnStatus(int status, int reason, IntPtr user)
        {
            var handler = statusHandler;
            if (handler != null)
            {
                RunHandler("connection status", () => handler((ConnectionStatus)status,
                    (ConnectionStatusChangeReason)reason));
            }
            if (status == (int)ConnectionStatus.Disabled && reason == (int)ConnectionStatusChangeReason.Client_Close)
            {
                // The client's last event: the dispatcher frees it once this poll returned.
                dispatcher.Finish(this);
            }
        }

        private void OnMessage(IntPtr message, IntPtr user)
        {
            var handler = messageHandler;
            if (handler == null)
            {
                return;
            }
            object context = messageHandlerContext;
            RunHandler("receive message", () =>
            {
                Task task = handler(Message.FromNative(message), context);
                if (task != null)
                {
                    task.ContinueWith(t => Trace.TraceError("iotconn: the receive message handler failed: " +
                        t.Exception), TaskContinuationOptions.OnlyOnFaulted);
                }
            });
        }

        private void OnSendComplete(ulong id, int result, int errorCode, IntPtr user)
        {
            // The library set iotconn_last_error() on this thread for this completion.
            if (result == NativeMethods.SendDelivered)
            {
                sends.Succeed(id, true);
            }
            else
            {
                sends.Fail(id, new IotconnException((ErrorCode)errorCode, NativeMethods.LastError()));
            }
        }

        private static void OnLog(int level, IntPtr message, IntPtr user)
        {
            // Errors and warnings only: the library's info and debug lines are for its own tests.
            if (level <= NativeMethods.LogWarn)
            {
                Trace.TraceWarning("iotconn: " + NativeMethods.FromUtf8(message));
            }
        }

        private int OnRetry(uint attempt, int errorCode, IntPtr errorMessage, IntPtr delayMs, IntPtr user)
        {
            var policy = customRetryPolicy;
            if (policy == null)
            {
                return 0;
            }
            try
            {
                TimeSpan interval;
                var error = new IotconnException((ErrorCode)errorCode, NativeMethods.FromUtf8(errorMessage));
                // The library counts attempts from 1, the .NET SDK's policies count retries from 0.
                if (!policy.ShouldRetry((int)attempt - 1, error, out interval))
                {
                    return 0;
                }
                Marshal.WriteInt32(delayMs, unchecked((int)ExponentialBackoff.Milliseconds("retryInterval",
                    interval)));
                return 1;
            }
            catch (Exception e)
            {
                // A failing policy must never kill the dispatcher: the client gives up (Retry_Expired).
                Trace.TraceError("iotconn: the retry policy threw at retry " + (attempt - 1) + ", not retrying: " + e);
                return 0;
            }
        }

        private static void RunHandler(string name, Action action)
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                // A failing handler must never kill the dispatcher.
                Trace.TraceError("iotconn: the " + name + " handler threw: " + e);
            }
        }

        private void ThrowIfClosed()
        {
            if (closed)
            {
                throw new IotconnException(ErrorCode.Closed, "the " + GetType().Name + " was closed or disposed");
            }
        }

        private static void Check(int rc)
        {
            if (rc < 0)
            {
                throw IotconnException.FromLastError(rc);
            }
        }
    }
}
