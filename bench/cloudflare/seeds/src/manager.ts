// The seed's factory, state manager and transition check, as written. The seed's manager is a
// class with static members over the factory's singleton; here it is the same code over a
// given storage, so that one Worker can serve both modes side by side (/kv/..., /do/...), and
// `PredictionStatusManager.default()` is the seed's (the factory's choice by environment).
import { DOPredictionStorage } from './do';
import { KVPredictionStorage } from './kv';
import { ECommonErrorCode, IPredictionStorage, KVStorageResult, PredictionStatus, StorageProvider } from './storage';

declare const process: { env: Record<string, string | undefined> } | undefined;

export function createStorageInstance(provider: StorageProvider): IPredictionStorage {
  return provider === StorageProvider.DO ? new DOPredictionStorage() : new KVPredictionStorage();
}

export class PredictionStorageFactory {
  private static instance: IPredictionStorage | null = null;

  static create(): IPredictionStorage {
    if (this.instance) {
      return this.instance;
    }
    const provider = this.getCurrentProvider();
    switch (provider) {
      case StorageProvider.DO:
        this.instance = new DOPredictionStorage();
        break;
      case StorageProvider.KV:
      default:
        this.instance = new KVPredictionStorage();
        break;
    }
    return this.instance;
  }

  static getCurrentProvider(): StorageProvider {
    const fromEnv = typeof process !== 'undefined' ? process.env.PREDICTION_STORAGE_PROVIDER : undefined;
    return (fromEnv || 'kv') as StorageProvider;
  }
}

export class PredictionStatusManager {
  private static byProvider = new Map<StorageProvider, PredictionStatusManager>();

  constructor(private storage: IPredictionStorage) {}

  static default(): PredictionStatusManager {
    return PredictionStatusManager.forProvider(PredictionStorageFactory.getCurrentProvider(), PredictionStorageFactory.create());
  }

  static forProvider(provider: StorageProvider, storage?: IPredictionStorage): PredictionStatusManager {
    let manager = this.byProvider.get(provider);
    if (!manager) {
      manager = new PredictionStatusManager(storage ?? createStorageInstance(provider));
      this.byProvider.set(provider, manager);
    }
    return manager;
  }

  async initializePredictionStatus(options: {
    predictionId: string;
    payload: Record<string, any>;
    prompt: string;
    model: string;
    estimatedTime?: number;
  }): Promise<KVStorageResult<void>> {
    return this.storage.initialize(options);
  }

  async getPredictionStatus(predictionId: string): Promise<KVStorageResult<PredictionStatus>> {
    return this.storage.get(predictionId);
  }

  async updatePredictionStatus(
    predictionId: string,
    updates: Partial<PredictionStatus>,
  ): Promise<KVStorageResult<PredictionStatus>> {
    return this.storage.update(predictionId, updates);
  }

  async markAsProcessing(predictionId: string): Promise<KVStorageResult<PredictionStatus>> {
    return this.updatePredictionStatus(predictionId, { status: 'processing' });
  }

  async markAsSucceeded(
    predictionId: string,
    imageUrl: string,
    imagePath: string,
    generationTime?: number,
  ): Promise<KVStorageResult<PredictionStatus>> {
    return this.updatePredictionStatus(predictionId, {
      status: 'succeeded',
      imageUrl,
      imagePath,
      generationTime,
    });
  }

  async markAsFailed(predictionId: string, error: string): Promise<KVStorageResult<PredictionStatus>> {
    return this.updatePredictionStatus(predictionId, { status: 'failed', error });
  }
}

// Valid state transitions
export const VALID_TRANSITIONS: Record<string, string[]> = {
  starting: ['processing', 'failed', 'canceled'],
  processing: ['succeeded', 'failed', 'canceled'],
  succeeded: [], // Terminal state
  failed: [], // Terminal state
  canceled: [], // Terminal state
};

export async function validateAndUpdateStatus(
  manager: PredictionStatusManager,
  predictionId: string,
  newStatus: PredictionStatus['status'],
  metadata?: Record<string, any>,
): Promise<KVStorageResult<PredictionStatus>> {
  const current = await manager.getPredictionStatus(predictionId);
  if (!current.success || !current.data) {
    return current;
  }
  // Validate transition
  const currentStatus = current.data.status;
  const validTransitions = VALID_TRANSITIONS[currentStatus] || [];
  if (!validTransitions.includes(newStatus)) {
    return {
      success: false,
      errorCode: ECommonErrorCode.INVALID_PARAMETER,
      message: `Invalid transition from ${currentStatus} to ${newStatus}`,
    };
  }
  // Perform atomic update
  return manager.updatePredictionStatus(predictionId, {
    status: newStatus,
    ...metadata,
    updatedAt: Date.now(),
  });
}
