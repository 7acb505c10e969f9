using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Iotconn
{
    /// <remarks>
    /// Twins and direct methods. A connection subscribes to twin answers and desired patches, and to method calls,
    /// only if the library has the matching callbacks when the connection is made (an IoT Hub of the Basic tier
    /// drops a device that subscribes), so the rule is: set them up before the first OpenAsync.
    /// <list type="bullet">
    /// <item>Twins are on when ClientOptions.UseTwin is set, or when SetDesiredPropertyUpdateCallbackAsync,
    /// GetTwinAsync or UpdateReportedPropertiesAsync is first called before OpenAsync. Otherwise GetTwinAsync and
    /// UpdateReportedPropertiesAsync throw IotconnException with ErrorCode.InvalidState.</item>
    /// <item>SetDesiredPropertyUpdateCallbackAsync and SetMethodHandlerAsync / SetMethodDefaultHandlerAsync with a
    /// handler, when none of their kind was set before OpenAsync, throw ErrorCode.InvalidState. After OpenAsync
    /// they may replace or remove (null) a handler: the subscription stays.</item>
    /// </list>
    /// JSON crosses as plain strings (TwinCollection, MethodRequest.DataAsJson).
    /// </remarks>
    public abstract partial class IotHubClient
    {
        private readonly object twinLock = new object();
        private bool opened;            // under twinLock: OpenAsync was called, subscriptions are fixed
        private bool twinRegistered;    // under twinLock
        private bool desiredRegistered; // under twinLock
        private bool methodsRegistered; // under twinLock

        // Native code may call these until iotconn_client_destroy returns; set once, under twinLock.
        private NativeMethods.TwinCallback twinCallback;
        private NativeMethods.ReportedCallback reportedCallback;
        private NativeMethods.DesiredCallback desiredCallback;
        private NativeMethods.MethodCallback methodCallback;

        private readonly Completions<Twin> twinGets = new Completions<Twin>();
        private readonly Completions<bool> reports = new Completions<bool>();

        private volatile DesiredPropertyUpdateCallback desiredHandler;
        private volatile object desiredHandlerContext;
        // Under twinLock; the default handler is the null name's entry.
        private readonly Dictionary<string, KeyValuePair<MethodCallback, object>> methodHandlers =
            new Dictionary<string, KeyValuePair<MethodCallback, object>>();
        private KeyValuePair<MethodCallback, object> defaultMethodHandler;

        /// <summary>Gets the whole twin; waits for a connection if there is none, bounded by the
        /// OperationTimeout (then it fails with ErrorCode.Timeout). See the class remarks for when twins are
        /// on.</summary>
        public Task<Twin> GetTwinAsync()
        {
            ThrowIfClosed();
            EnableTwinBeforeOpen();
            ulong id;
            Check(NativeMethods.iotconn_twin_get(handle, out id));
            return twinGets.Register(id);
        }

        /// <summary>Queues a reported-properties patch (one JSON object; a null value deletes a property); it waits
        /// in the outbound queue in order with the messages and completes when the hub accepted it, or fails as a
        /// SendEventAsync does.</summary>
        public Task UpdateReportedPropertiesAsync(TwinCollection reportedProperties)
        {
            if (reportedProperties == null)
            {
                throw IotconnException.InvalidArgument("reportedProperties", "must not be null");
            }
            ThrowIfClosed();
            EnableTwinBeforeOpen();
            byte[] json = Encoding.UTF8.GetBytes(reportedProperties.ToJson());
            ulong id;
            Check(NativeMethods.iotconn_twin_report(handle, json, new UIntPtr((uint)json.Length), out id));
            return reports.Register(id);
        }

        /// <summary>Sets the handler of desired-property updates (null removes it); it runs on the dispatcher
        /// thread with each patch, "$version" inside, and after every connect with the whole desired section when it
        /// changed while offline, each version once, in order. The first one must be set before OpenAsync.</summary>
        public Task SetDesiredPropertyUpdateCallbackAsync(DesiredPropertyUpdateCallback callback, object userContext,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            cancellationToken.ThrowIfCancellationRequested();
            ThrowIfClosed();
            lock (twinLock)
            {
                if (callback != null && !desiredRegistered)
                {
                    RequireNotOpened("SetDesiredPropertyUpdateCallbackAsync");
                    RegisterTwin();
                    desiredCallback = OnDesired;
                    Check(NativeMethods.iotconn_register_desired_callback(handle, desiredCallback, IntPtr.Zero));
                    desiredRegistered = true;
                }
                desiredHandlerContext = userContext;
                desiredHandler = callback;
            }
            return Task.FromResult(true);
        }

        /// <summary>Sets the handler of the direct method methodName (null removes it); it runs on the dispatcher
        /// thread and the response its task gives is sent when it completes (a handler that throws or fails
        /// answers 500). The first method handler must be set before OpenAsync.</summary>
        public Task SetMethodHandlerAsync(string methodName, MethodCallback methodHandler, object userContext,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            if (methodName == null)
            {
                throw IotconnException.InvalidArgument("methodName", "must not be null");
            }
            cancellationToken.ThrowIfCancellationRequested();
            ThrowIfClosed();
            lock (twinLock)
            {
                if (methodHandler == null)
                {
                    methodHandlers.Remove(methodName);
                }
                else
                {
                    EnableMethods("SetMethodHandlerAsync");
                    methodHandlers[methodName] = new KeyValuePair<MethodCallback, object>(methodHandler, userContext);
                }
            }
            return Task.FromResult(true);
        }

        /// <summary>Sets the handler of the methods without one of their own (null removes it). Without either, a
        /// call is answered 501.</summary>
        public Task SetMethodDefaultHandlerAsync(MethodCallback methodHandler, object userContext,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            cancellationToken.ThrowIfCancellationRequested();
            ThrowIfClosed();
            lock (twinLock)
            {
                if (methodHandler != null)
                {
                    EnableMethods("SetMethodDefaultHandlerAsync");
                }
                defaultMethodHandler = new KeyValuePair<MethodCallback, object>(methodHandler, userContext);
            }
            return Task.FromResult(true);
        }

        // OpenAsync calls this before connecting: from then on, what is registered is what the connections use.
        private void FixSubscriptions(bool useTwin)
        {
            lock (twinLock)
            {
                if (useTwin && !opened)
                {
                    RegisterTwin();
                }
                opened = true;
            }
        }

        // Twins asked for before OpenAsync turn them on; after it the library refuses them (InvalidState) unless
        // they were on.
        private void EnableTwinBeforeOpen()
        {
            lock (twinLock)
            {
                if (!opened)
                {
                    RegisterTwin();
                }
            }
        }

        private void RegisterTwin()
        {
            if (twinRegistered)
            {
                return;
            }
            twinCallback = OnTwin;
            reportedCallback = OnReported;
            Check(NativeMethods.iotconn_register_twin_callback(handle, twinCallback, IntPtr.Zero));
            Check(NativeMethods.iotconn_register_reported_callback(handle, reportedCallback, IntPtr.Zero));
            twinRegistered = true;
        }

        private void EnableMethods(string call)
        {
            if (methodsRegistered)
            {
                return;
            }
            RequireNotOpened(call);
            methodCallback = OnMethod;
            Check(NativeMethods.iotconn_register_method_callback(handle, methodCallback, IntPtr.Zero));
            methodsRegistered = true;
        }

        private void RequireNotOpened(string call)
        {
            if (opened)
            {
                throw new IotconnException(ErrorCode.InvalidState, call + " must first be called before OpenAsync: " +
                    "a connection subscribes only to what is registered when it is made");
            }
        }

        private void ReleaseTwins()
        {
            twinGets.Release(() => new IotconnException(ErrorCode.Closed,
                "the client was shut down before the twin arrived"));
            reports.Release(() => new IotconnException(ErrorCode.Closed,
                "the client was shut down before the reported properties completed"));
        }

        // ---- callbacks: they run inside iotconn_poll, on the dispatcher thread ----

        private void OnTwin(ulong id, IntPtr json, UIntPtr len, int errorCode, IntPtr user)
        {
            if (errorCode == 0)
            {
                twinGets.Succeed(id, new Twin(NativeMethods.FromUtf8(json, len)));
            }
            else
            {
                // The library set iotconn_last_error() on this thread for this completion.
                twinGets.Fail(id, new IotconnException((ErrorCode)errorCode, NativeMethods.LastError()));
            }
        }

        private void OnReported(ulong id, long version, int errorCode, IntPtr user)
        {
            if (errorCode == 0)
            {
                reports.Succeed(id, true);
            }
            else
            {
                reports.Fail(id, new IotconnException((ErrorCode)errorCode, NativeMethods.LastError()));
            }
        }

        private void OnDesired(long version, IntPtr json, UIntPtr len, IntPtr user)
        {
            var handler = desiredHandler;
            if (handler == null)
            {
                return;
            }
            object context = desiredHandlerContext;
            var patch = new TwinCollection(NativeMethods.FromUtf8(json, len));
            RunHandler("desired property update", () =>
            {
                Task task = handler(patch, context);
                if (task != null)
                {
                    task.ContinueWith(t => Trace.TraceError("iotconn: the desired property update handler failed: " +
                        t.Exception), TaskContinuationOptions.OnlyOnFaulted);
                }
            });
        }

        private void OnMethod(IntPtr requestId, IntPtr methodName, IntPtr payload, UIntPtr len, IntPtr user)
        {
            // Both are valid only during this call.
            string id = NativeMethods.FromUtf8(requestId);
            var request = new MethodRequest(NativeMethods.FromUtf8(methodName), NativeMethods.Bytes(payload, len));
            KeyValuePair<MethodCallback, object> entry;
            lock (twinLock)
            {
                if (!methodHandlers.TryGetValue(request.Name, out entry))
                {
                    entry = defaultMethodHandler;
                }
            }
            Task<MethodResponse> answer;
            try
            {
                answer = entry.Key == null ? Task.FromResult(new MethodResponse(501))
                    : entry.Key(request, entry.Value) ?? Task.FromResult<MethodResponse>(null);
            }
            catch (Exception e)
            {
                Trace.TraceError("iotconn: the method handler of " + request.Name + " threw: " + e);
                answer = Task.FromResult<MethodResponse>(null);
            }
            // iotconn_method_respond blocks until the answer is written: never on the dispatcher.
            answer.ContinueWith(t => Respond(id, request.Name, t), TaskScheduler.Default);
        }

        private void Respond(string id, string name, Task<MethodResponse> answer)
        {
            MethodResponse response = answer.Status == TaskStatus.RanToCompletion ? answer.Result : null;
            if (response == null)
            {
                Trace.TraceError("iotconn: the method handler of " + name + " gave no response (" +
                    (answer.Exception != null ? answer.Exception.ToString() : "null") + "): answering 500");
                response = new MethodResponse(500);
            }
            try
            {
                byte[] rid = NativeMethods.ToUtf8(id);
                byte[] result = response.Result;
                int rc = NativeMethods.iotconn_method_respond(handle, rid, response.Status, result,
                    new UIntPtr(result == null ? 0u : (uint)result.Length));
                if (rc == (int)ErrorCode.InvalidArgument && result != null)
                {
                    // The payload was not one JSON value; the call still waits for an answer.
                    Trace.TraceError("iotconn: the response of method " + name + " was refused (" +
                        NativeMethods.LastError() + "): answering 500");
                    rc = NativeMethods.iotconn_method_respond(handle, rid, 500, null, UIntPtr.Zero);
                }
                if (rc < 0)
                {
                    Trace.TraceWarning("iotconn: answering method " + name + " failed: " +
                        IotconnException.FromLastError(rc).Message);
                }
            }
            catch (ObjectDisposedException)
            {
                // The client was closed meanwhile: the hub forgets the call with the connection.
            }
        }
    }
}
