// The seed's KVPredictionStorage, as written: update is a get, a merge in the Worker, then a
// put (no compare-and-set; KV has none), so concurrent updates overwrite each other.
import { deleteKV, getKV, putKV } from './context';
import {
  ECommonErrorCode,
  InitializePredictionOptions,
  IPredictionStorage,
  KVStorageResult,
  ListPredictionOptions,
  ListPredictionResult,
  PredictionStatus,
} from './storage';

export class KVPredictionStorage implements IPredictionStorage {
  private static readonly KEY_PREFIX = 'prediction:';
  private static readonly DEFAULT_TTL = 3600; // 1 hour

  async initialize(options: InitializePredictionOptions): Promise<KVStorageResult<void>> {
    const { predictionId, payload, prompt, model, estimatedTime } = options;
    const status: PredictionStatus = {
      status: 'starting',
      predictionId,
      createdAt: Date.now(),
      updatedAt: Date.now(),
      payload,
      prompt,
      model,
      estimatedTime,
    };
    return await putKV(`${KVPredictionStorage.KEY_PREFIX}${predictionId}`, status, {
      expirationTtl: KVPredictionStorage.DEFAULT_TTL,
    });
  }

  async get(predictionId: string): Promise<KVStorageResult<PredictionStatus>> {
    return getKV<PredictionStatus>(`${KVPredictionStorage.KEY_PREFIX}${predictionId}`);
  }

  async update(
    predictionId: string,
    updates: Partial<PredictionStatus>,
  ): Promise<KVStorageResult<PredictionStatus>> {
    const existingResult = await this.get(predictionId);
    if (!existingResult.success || !existingResult.data) {
      return existingResult;
    }
    const updatedStatus: PredictionStatus = {
      ...existingResult.data,
      ...updates,
      updatedAt: Date.now(),
    };
    const saveResult = await putKV(`${KVPredictionStorage.KEY_PREFIX}${predictionId}`, updatedStatus, {
      expirationTtl: KVPredictionStorage.DEFAULT_TTL,
    });
    return saveResult.success
      ? { success: true, data: updatedStatus }
      : { success: false, errorCode: saveResult.errorCode };
  }

  async delete(predictionId: string): Promise<KVStorageResult<void>> {
    return deleteKV(`${KVPredictionStorage.KEY_PREFIX}${predictionId}`);
  }

  async list(_options?: ListPredictionOptions): Promise<KVStorageResult<ListPredictionResult>> {
    // Not shown in the seed and not benchmarked.
    return { success: false, errorCode: ECommonErrorCode.INVALID_PARAMETER, message: 'not implemented' };
  }
}
