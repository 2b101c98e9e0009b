// The seed's DOPredictionStorage, as written: update is rpcService.get(name) then
// rpcService.set(name, ...), two separate RPC calls into the object, with the merge in the
// calling Worker between them. The object runs each call atomically, but nothing holds the
// two together, so concurrent updates interleave and overwrite each other.
//
// BaseDO and BaseDOService are what the seed calls but does not show: a generic object with
// get and set (value and TTL) and an RPC entrypoint that routes a name to its object.
import { DurableObject, WorkerEntrypoint } from 'cloudflare:workers';
import { Env, getCloudflareContext } from './context';
import {
  ECommonErrorCode,
  InitializePredictionOptions,
  IPredictionStorage,
  KVStorageResult,
  ListPredictionOptions,
  ListPredictionResult,
  PredictionStatus,
} from './storage';

interface StoredValue {
  value: any;
  expiresAt: number;
}

export class BaseDO extends DurableObject<Env> {
  async get(): Promise<any> {
    const stored = (await this.ctx.storage.get('data')) as StoredValue | undefined;
    if (!stored || stored.expiresAt <= Date.now()) {
      return null;
    }
    return stored.value;
  }

  async set(value: any, ttlMs: number): Promise<void> {
    await this.ctx.storage.put('data', { value, expiresAt: Date.now() + ttlMs });
  }

  async remove(): Promise<void> {
    await this.ctx.storage.delete('data');
  }
}

export class BaseDOService extends WorkerEntrypoint<Env> {
  private stub(name: string): any {
    return this.env.BASE_DO.get(this.env.BASE_DO.idFromName(name));
  }

  async get(name: string): Promise<any> {
    return this.stub(name).get();
  }

  async set(name: string, value: any, ttlMs: number): Promise<void> {
    await this.stub(name).set(value, ttlMs);
  }

  async delete(name: string): Promise<void> {
    await this.stub(name).remove();
  }
}

export class DOPredictionStorage implements IPredictionStorage {
  private async getBaseDORpcService() {
    const { env } = await getCloudflareContext({ async: true });
    const { BASE_DO_SERVICE } = env;
    if (!BASE_DO_SERVICE) {
      throw new Error('BASE_DO_SERVICE binding not found');
    }
    return BASE_DO_SERVICE;
  }

  private getDOName(predictionId: string): string {
    return `prediction-${predictionId}`;
  }

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
    const doData = {
      status,
      metadata: {
        createdAt: status.createdAt,
        updatedAt: status.updatedAt,
        status: status.status,
      },
    };
    try {
      const rpcService = await this.getBaseDORpcService();
      const doName = this.getDOName(predictionId);
      await rpcService.set(doName, doData, 3600000); // 1 hour TTL
      return { success: true };
    } catch (error) {
      return { success: false, errorCode: ECommonErrorCode.INTERNAL_SERVER_ERROR };
    }
  }

  async get(predictionId: string): Promise<KVStorageResult<PredictionStatus>> {
    try {
      const rpcService = await this.getBaseDORpcService();
      const existingData = await rpcService.get(this.getDOName(predictionId));
      if (!existingData || !existingData.status) {
        return { success: false, errorCode: ECommonErrorCode.NOT_FOUND };
      }
      return { success: true, data: existingData.status };
    } catch (error) {
      return { success: false, errorCode: ECommonErrorCode.INTERNAL_SERVER_ERROR };
    }
  }

  async update(
    predictionId: string,
    updates: Partial<PredictionStatus>,
  ): Promise<KVStorageResult<PredictionStatus>> {
    try {
      const rpcService = await this.getBaseDORpcService();
      const doName = this.getDOName(predictionId);
      const existingData = await rpcService.get(doName);
      if (!existingData || !existingData.status) {
        return { success: false, errorCode: ECommonErrorCode.SERVICE_UNAVAILABLE };
      }
      const updatedStatus: PredictionStatus = {
        ...existingData.status,
        ...updates,
        updatedAt: Date.now(),
      };
      const updatedData = {
        status: updatedStatus,
        metadata: {
          createdAt: existingData.metadata.createdAt,
          updatedAt: updatedStatus.updatedAt,
          status: updatedStatus.status,
        },
      };
      await rpcService.set(doName, updatedData, 3600000);
      return { success: true, data: updatedStatus };
    } catch (error) {
      return { success: false, errorCode: ECommonErrorCode.INTERNAL_SERVER_ERROR };
    }
  }

  async delete(predictionId: string): Promise<KVStorageResult<void>> {
    try {
      const rpcService = await this.getBaseDORpcService();
      await rpcService.delete(this.getDOName(predictionId));
      return { success: true };
    } catch (error) {
      return { success: false, errorCode: ECommonErrorCode.INTERNAL_SERVER_ERROR };
    }
  }

  async list(_options?: ListPredictionOptions): Promise<KVStorageResult<ListPredictionResult>> {
    // Not shown in the seed and not benchmarked.
    return { success: false, errorCode: ECommonErrorCode.INVALID_PARAMETER, message: 'not implemented' };
  }
}
