// Stand-ins for what the seed imports without showing: OpenNext's getCloudflareContext (here:
// the env of the Worker, set once per request; it is the same object for every request of an
// isolate) and the putKV/getKV helpers around the KV binding.
import { ECommonErrorCode, KVStorageResult } from './storage';

export interface Env {
  PREDICTIONS_KV: any;
  BASE_DO: any;
  BASE_DO_SERVICE: any;
  PREDICTION_STORAGE_PROVIDER?: string;
}

let currentEnv: Env | null = null;

export function setCloudflareEnv(env: Env): void {
  currentEnv = env;
}

export async function getCloudflareContext(_options: { async: boolean }): Promise<{ env: Env }> {
  if (!currentEnv) {
    throw new Error('no Cloudflare context');
  }
  return { env: currentEnv };
}

export async function putKV(
  key: string,
  value: unknown,
  options: { expirationTtl: number },
): Promise<KVStorageResult<void>> {
  try {
    const { env } = await getCloudflareContext({ async: true });
    await env.PREDICTIONS_KV.put(key, JSON.stringify(value), options);
    return { success: true };
  } catch (error) {
    return { success: false, errorCode: ECommonErrorCode.INTERNAL_SERVER_ERROR };
  }
}

export async function getKV<T>(key: string): Promise<KVStorageResult<T>> {
  try {
    const { env } = await getCloudflareContext({ async: true });
    const value = await env.PREDICTIONS_KV.get(key, 'json');
    if (value === null) {
      return { success: false, errorCode: ECommonErrorCode.NOT_FOUND };
    }
    return { success: true, data: value as T };
  } catch (error) {
    return { success: false, errorCode: ECommonErrorCode.INTERNAL_SERVER_ERROR };
  }
}

export async function deleteKV(key: string): Promise<KVStorageResult<void>> {
  try {
    const { env } = await getCloudflareContext({ async: true });
    await env.PREDICTIONS_KV.delete(key);
    return { success: true };
  } catch (error) {
    return { success: false, errorCode: ECommonErrorCode.INTERNAL_SERVER_ERROR };
  }
}
