// The seeds' storage abstraction (seed 000), as written: the interface, the result type, the
// providers and the factory that chooses one by environment.

export interface PredictionStatus {
  status: 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled';
  predictionId: string;
  createdAt: number;
  updatedAt: number;
  payload?: Record<string, any>;
  prompt?: string;
  model?: string;
  imageUrl?: string;
  imagePath?: string;
  error?: string;
  estimatedTime?: number;
  generationTime?: number;
  // Not in the seed: the benchmark's writer tag (which racing writer's update is stored). It
  // travels in the seed's `metadata` spread (validateAndUpdateStatus), like any other field.
  writer?: string;
}

export enum ECommonErrorCode {
  NOT_FOUND = 'NOT_FOUND',
  INVALID_PARAMETER = 'INVALID_PARAMETER',
  SERVICE_UNAVAILABLE = 'SERVICE_UNAVAILABLE',
  INTERNAL_SERVER_ERROR = 'INTERNAL_SERVER_ERROR',
}

export interface KVStorageResult<T> {
  success: boolean;
  data?: T;
  errorCode?: ECommonErrorCode;
  message?: string;
}

export interface InitializePredictionOptions {
  predictionId: string;
  payload: Record<string, any>;
  prompt: string;
  model: string;
  estimatedTime?: number;
}

export interface ListPredictionOptions {
  limit?: number;
  cursor?: string;
}

export interface ListPredictionResult {
  predictions: PredictionStatus[];
  cursor?: string;
}

export interface IPredictionStorage {
  initialize(options: InitializePredictionOptions): Promise<KVStorageResult<void>>;
  get(predictionId: string): Promise<KVStorageResult<PredictionStatus>>;
  update(predictionId: string, updates: Partial<PredictionStatus>): Promise<KVStorageResult<PredictionStatus>>;
  delete(predictionId: string): Promise<KVStorageResult<void>>;
  list(options?: ListPredictionOptions): Promise<KVStorageResult<ListPredictionResult>>;
}

export enum StorageProvider {
  KV = 'kv',
  DO = 'do',
}
