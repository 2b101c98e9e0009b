// The reference Worker for bench/cloudflare.sh: the seeds' status route and the writes around
// it, over the seeds' storage (seed 000) as written, races included. Routes, MODE one of
// `kv` or `do` (or no prefix: the seed's factory, PREDICTION_STORAGE_PROVIDER):
//
//   POST  /MODE/api/predictions              create ({predictionId?, payload?, prompt?, model?})
//   GET   /MODE/api/predictions/{id}         the seeds' status route and response shape
//   PATCH /MODE/api/predictions/{id}         a plain update (the manager's updatePredictionStatus)
//   POST  /MODE/api/predictions/{id}/status  a checked transition ({status, writer, ...}),
//                                            the seed's validateAndUpdateStatus: 200 when the
//                                            writer is told it won, 409 when refused
//   GET   /MODE/debug/predictions/{id}       the whole stored record (writer tag included)
//   PUT   /bare/api/predictions/{id}         keeps the body in memory (bench/cloudflare.sh puts the
//                                            bytes a real status read returned)
//   GET   /bare/api/predictions/{id}         those bytes from memory, no storage: workerd's own
//                                            ceiling, the reference for status reads
import { Env, setCloudflareEnv } from './context';
import { PredictionStatusManager, validateAndUpdateStatus } from './manager';
import { ECommonErrorCode, KVStorageResult, PredictionStatus, StorageProvider } from './storage';

export { BaseDO, BaseDOService } from './do';

// The /bare/ route's bodies (one isolate under `wrangler dev`).
const BARE = new Map<string, string>();

const TERMINAL_OR_PROCESSING = new Set(['processing', 'succeeded', 'failed', 'canceled']);

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json' },
  });
}

function failure(result: KVStorageResult<unknown>): Response {
  const status =
    result.errorCode === ECommonErrorCode.NOT_FOUND
      ? 404
      : result.errorCode === ECommonErrorCode.INVALID_PARAMETER
        ? 409
        : 500;
  return json({ success: false, errorCode: result.errorCode, message: result.message }, status);
}

// The seed's GET handler's response body.
function statusBody(status: PredictionStatus): unknown {
  return {
    success: true,
    data: {
      predictionId: status.predictionId,
      status: status.status,
      imageUrl: status.imageUrl,
      error: status.error,
      estimatedTime: status.estimatedTime,
      generationTime: status.generationTime,
      createdAt: status.createdAt,
      updatedAt: status.updatedAt,
    },
  };
}

async function readBody(request: Request): Promise<Record<string, any> | null> {
  try {
    const body = await request.json();
    return body && typeof body === 'object' && !Array.isArray(body) ? (body as Record<string, any>) : null;
  } catch {
    return null;
  }
}

async function route(request: Request, manager: PredictionStatusManager, rest: string[]): Promise<Response> {
  // rest: ['api', 'predictions', id?, 'status'?] or ['debug', 'predictions', id]
  const method = request.method;
  if (rest[0] === 'debug' && rest[1] === 'predictions' && rest.length === 3 && method === 'GET') {
    const result = await manager.getPredictionStatus(rest[2]);
    return result.success && result.data ? json(result.data) : failure(result);
  }
  if (rest[0] !== 'api' || rest[1] !== 'predictions') {
    return json({ error: 'Not found' }, 404);
  }
  if (rest.length === 2 && method === 'POST') {
    const body = await readBody(request);
    if (!body) return json({ error: 'Invalid JSON body' }, 400);
    const predictionId = typeof body.predictionId === 'string' ? body.predictionId : crypto.randomUUID();
    const result = await manager.initializePredictionStatus({
      predictionId,
      payload: body.payload ?? {},
      prompt: String(body.prompt ?? ''),
      model: String(body.model ?? 'seed/reference'),
      estimatedTime: typeof body.estimatedTime === 'number' ? body.estimatedTime : undefined,
    });
    return result.success ? json({ success: true, data: { predictionId } }, 201) : failure(result);
  }
  if (rest.length === 3 && method === 'GET') {
    // The seed's GET /api/predictions/{predictionId}.
    try {
      const result = await manager.getPredictionStatus(rest[2]);
      if (!result.success || !result.data) {
        return json({ error: 'Prediction not found' }, 404);
      }
      return json(statusBody(result.data));
    } catch (error) {
      return json({ error: 'Internal server error' }, 500);
    }
  }
  if (rest.length === 3 && method === 'PATCH') {
    const body = await readBody(request);
    if (!body) return json({ error: 'Invalid JSON body' }, 400);
    const result = await manager.updatePredictionStatus(rest[2], body as Partial<PredictionStatus>);
    return result.success && result.data ? json({ success: true, data: result.data }) : failure(result);
  }
  if (rest.length === 4 && rest[3] === 'status' && method === 'POST') {
    const body = await readBody(request);
    if (!body || !TERMINAL_OR_PROCESSING.has(body.status)) {
      return json({ error: 'status must be processing, succeeded, failed or canceled' }, 400);
    }
    const { status, ...metadata } = body;
    const result = await validateAndUpdateStatus(manager, rest[2], status, metadata);
    return result.success && result.data ? json({ success: true, data: result.data }) : failure(result);
  }
  return json({ error: 'Not found' }, 404);
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    setCloudflareEnv(env);
    const parts = new URL(request.url).pathname.split('/').filter((p) => p !== '').map(decodeURIComponent);
    if (parts[0] === 'bare') {
      const key = parts.slice(1).join('/');
      if (request.method === 'PUT') {
        BARE.set(key, await request.text());
        return new Response(null, { status: 204 });
      }
      const body = BARE.get(key);
      return body === undefined
        ? json({ error: 'Prediction not found' }, 404)
        : new Response(body, { headers: { 'content-type': 'application/json' } });
    }
    if (parts[0] === 'kv') return route(request, PredictionStatusManager.forProvider(StorageProvider.KV), parts.slice(1));
    if (parts[0] === 'do') return route(request, PredictionStatusManager.forProvider(StorageProvider.DO), parts.slice(1));
    return route(request, PredictionStatusManager.default(), parts);
  },
};
